"""The engine process's batch assembly and batcher bookkeeping, in process: requests in consecutive
shared-memory slots merge into one view (no copy), the CUDA gather's code path on the CPU device,
frames carrying several messages, request timeouts from one timer, a cancelled caller skipped."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

import trtflow
from tests.test_serve import affine_model
from trtflow.serve import ipc
from trtflow.serve.batcher import Batcher, merge, runs
from trtflow.serve.model import BatchConfig, ServedModel
from trtflow.serve.protocol import ProtocolError


@pytest.fixture
def arena():
    a = ipc.Arena.create(2 * 4 * 4 * 4, 8)  # one [1,2,4,4] float32 input fills a slot exactly
    for s in range(a.slots):
        a.array[s * a.slot_bytes:(s + 1) * a.slot_bytes].view(np.float32)[:] = s
    yield a
    a.close()


def _feeds(arena, slots, specs=(("x", 0, (1, 2, 4, 4), "<f4"),)):
    return [arena.views(s, list(specs)) for s in slots]


def test_reserve_lays_a_slot_out_as_put_does(arena):
    inputs = {"x": np.arange(16, dtype=np.float32).reshape(1, 2, 8), "y": np.arange(3, dtype=np.int64)}
    views, slot, specs = arena.reserve([(n, a.dtype, a.shape) for n, a in inputs.items()])
    assert specs == arena.put(slot, {n: np.zeros_like(a) for n, a in inputs.items()})
    for view, arr in zip(views, inputs.values()):
        view[:] = arr.tobytes()
    for name, got in arena.views(slot, specs).items():
        np.testing.assert_array_equal(got, inputs[name])
    assert arena.reserve([("x", np.dtype(np.float32), (1, 2, 4, 5))]) is None  # larger than a slot
    while arena.take() is not None:
        pass
    assert arena.reserve([("x", np.dtype(np.float32), (1, 2))]) is None  # no free slot


def test_consecutive_slots_merge_into_one_view(arena):
    feeds = _feeds(arena, [2, 3, 4, 0, 1, 6])
    want = np.concatenate([f["x"] for f in feeds])
    parts = runs([f["x"] for f in feeds])
    assert [p.shape[0] for p in parts] == [3, 2, 1]
    assert np.shares_memory(parts[0], arena.array) and np.array_equal(np.concatenate(parts), want)
    merged = merge(_feeds(arena, [4, 5, 6, 7]))["x"]
    assert merged.shape == (4, 2, 4, 4) and np.shares_memory(merged, arena.array)  # one run: no copy
    np.testing.assert_array_equal(merged[:, 0, 0, 0], [4, 5, 6, 7])
    np.testing.assert_array_equal(merge(feeds)["x"], want)


def test_inputs_that_do_not_fill_a_slot_or_are_not_slot_views_are_concatenated(arena):
    two = (("x", 0, (1, 2, 4, 2), "<f4"), ("y", 64, (1, 2), "<f4"))  # two inputs per slot: never adjacent
    feeds = _feeds(arena, [0, 1, 2], two) + [{"x": np.ones((2, 2, 4, 2), np.float32), "y": np.ones((2, 2), np.float32)}]
    merged = merge(feeds)
    for name in ("x", "y"):
        assert len(runs([f[name] for f in feeds])) == 4
        np.testing.assert_array_equal(merged[name], np.concatenate([f[name] for f in feeds]))


def test_cuda_gather_code_path_on_the_cpu_device(arena):
    torch = pytest.importorskip("torch")
    from trtflow.serve.gather import CudaGather

    feeds = _feeds(arena, [5, 6, 7, 1])
    got = CudaGather._gather(feeds, [1, 1, 1, 1], torch.device("cpu"), True)["x"]
    np.testing.assert_array_equal(got.numpy(), np.concatenate([f["x"] for f in feeds]))
    one = CudaGather._gather(feeds[:1], [None], torch.device("cpu"), False)["x"]
    np.testing.assert_array_equal(one.numpy(), feeds[0]["x"])


def test_channel_carries_the_messages_of_one_turn_in_one_frame(tmp_path):
    got, frames = [], []

    async def run():
        loop = asyncio.get_running_loop()
        server = await loop.create_unix_server(lambda: ipc.Channel(got.append), str(tmp_path / "s"))
        _, client = await loop.create_unix_connection(lambda: ipc.Channel(lambda m: None), str(tmp_path / "s"))
        write = client.transport.writelines
        client.transport.writelines = lambda parts: (frames.append(len(parts)), write(parts))
        for i in range(50):
            assert client.send(("infer", i, "m", i % 7, [("x", 0, (1, 4), "<f4")]))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(got) == 50:
                break
        client.transport.close()
        server.close()

    asyncio.run(run())
    assert [m[1] for m in got] == list(range(50)) and frames == [2]  # one header + one payload


def test_frame_header_holds_a_frame_over_4_gib():
    """The messages of one turn (a large batch of big outputs) can pass 4 GiB together: a 4-byte
    header raised OverflowError, every message of that turn was dropped and its requests hung."""
    n = (5 << 30) + 3
    assert int.from_bytes(n.to_bytes(ipc.HEADER, "little"), "little") == n


def test_engine_failures_are_500_and_bad_input_400():
    from trtflow.errors import EngineError, InputShapeError, UsageError
    from trtflow.serve.protocol import error_status

    assert error_status(EngineError("engine closed")) == (500, "engine closed")
    assert error_status(InputShapeError("dim 1"))[0] == 400 == error_status(UsageError("bad"))[0]
    assert error_status(ProtocolError("no model", 404)) == (404, "no model")
    assert error_status(RuntimeError("x")) == (500, "internal error: RuntimeError: x")


def test_an_output_that_cannot_be_pickled_fails_its_request_only():
    from trtflow.errors import EngineError
    from trtflow.serve.engine_process import Peer

    words = np.array(["a", {"k": 1}], dtype=object)
    back = ipc.unpack(ipc.pack({"y": np.arange(3, dtype=np.float32), "w": words}))
    assert back["w"].tolist() == words.tolist() and back["y"].tolist() == [0, 1, 2]
    bad = np.array([threading.Lock()], dtype=object)
    with pytest.raises(EngineError, match="output 'z' cannot be sent"):
        ipc.pack({"z": bad})
    peer, sent = Peer(None), []
    peer.channel.send = sent.append
    peer.open = 2
    peer.answer(1, "m", {"z": bad}, None)
    peer.answer(2, "m", {"y": np.ones(2, np.float32)}, None)
    assert sent[0][:3] == ("err", 1, 500) and "cannot be sent" in sent[0][3]
    assert sent[1][:2] == ("ok", 2) and peer.open == 0


def _gated(timeout_s: float):
    """The affine model at max batch 1 and an ``execute`` that runs a batch once ``gate`` is set."""
    from trtflow.serve.batcher import _execute

    engine = trtflow.load(affine_model(), engine="ort")
    model = ServedModel("affine", [engine], BatchConfig(max_batch=1, timeout_s=timeout_s))
    gate = threading.Event()

    def execute(engine, batch, batched):
        gate.wait(5)
        return _execute(engine, batch, batched)

    return model, gate, execute


def test_timeouts_from_one_timer_and_cancelled_callers_skipped():
    model, gate, execute = _gated(0.05)
    gate.set()

    async def run():
        batcher = Batcher(model, execute=execute)
        first = []
        batcher.submit({"x": np.ones((1, 4), np.float32)}, lambda r, e: first.append((r, e)))
        while not first:
            await asyncio.sleep(0.005)
        gate.clear()  # the next request runs and blocks past its timeout; the ones behind it wait
        held, late = [], []
        batcher.submit({"x": np.ones((1, 4), np.float32)}, lambda r, e: held.append(e))
        await asyncio.sleep(0.01)
        task = asyncio.ensure_future(batcher.infer({"x": np.ones((1, 4), np.float32)}))
        batcher.submit({"x": np.ones((1, 4), np.float32)}, lambda r, e: late.append(e))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0.2)
        gate.set()
        await batcher.drain()
        return first, held, late, batcher.stats.values["nv_inference_count"], len(batcher._live)

    first, held, late, count, live = asyncio.run(run())
    assert first[0][1] is None and np.allclose(first[0][0]["y"], 3.0)
    for errors in (held, late):  # running and queued requests both answered 503, once
        assert len(errors) == 1 and isinstance(errors[0], ProtocolError) and errors[0].status == 503
        assert "timeout" in str(errors[0])
    assert count == 2 and live == 0  # the cancelled and the expired queued request never ran


def test_split_gives_each_request_its_rows_as_views():
    from trtflow.serve.batcher import split

    out = {"y": np.arange(6 * 4, dtype=np.float32).reshape(6, 4), "n": np.arange(6)}
    for rows in ([1] * 6, [2, 1, 3]):
        parts, start = split(out, rows), 0
        assert len(parts) == len(rows)
        for part, n in zip(parts, rows):
            for name, value in out.items():
                assert part[name].shape == (n,) + value.shape[1:] and np.shares_memory(part[name], value)
                np.testing.assert_array_equal(part[name], value[start:start + n])
            start += n


class _Pipelined:
    """A pipelined ``execute`` on the CPU: ``launch`` runs the batch and records the order of
    events; ``finish`` waits on a gate, so a second batch must be launched before the first lands;
    a batch whose first input holds ``fail`` raises in ``launch`` or ``finish``."""

    def __init__(self):
        from trtflow.serve.batcher import _execute

        self.run, self.events, self.gate = _execute, [], threading.Event()

    def __call__(self, engine, batch, batched):
        return self.finish(self.launch(engine, batch, batched))

    def launch(self, engine, batch, batched):
        first = float(batch[0].feed["x"].flat[0])
        if first == -1:
            raise RuntimeError("launch failed")
        self.events.append(("launch", first))
        return first, self.run(engine, batch, batched)

    def finish(self, pending):
        first, done = pending
        self.gate.wait(5)
        if first == -2:
            raise RuntimeError("finish failed")
        self.events.append(("finish", first))
        return done


def test_pipelined_execute_launches_the_next_batch_before_the_first_lands():
    engine = trtflow.load(affine_model(), engine="ort")
    model = ServedModel("affine", [engine], BatchConfig(max_batch=2))
    execute = _Pipelined()

    async def run():
        batcher = Batcher(model, execute=execute)
        answers = {}

        def submit(value):
            batcher.submit({"x": np.full((1, 4), value, np.float32)},
                           lambda r, e, v=value: answers.setdefault(v, (r, e)))

        submit(1.0)
        await asyncio.sleep(0.05)  # batch [1] launched; its finish waits on the gate
        for value in (2.0, 3.0, -1.0, 5.0):
            submit(value)
        for _ in range(200):  # pipelined: [2, 3] is launched while [1] has not landed
            if len(execute.events) >= 2:
                break
            await asyncio.sleep(0.005)
        launched_early = list(execute.events)
        execute.gate.set()
        await batcher.drain()
        return launched_early, answers, batcher.stats.values["nv_inference_count"], batcher._busy

    early, answers, count, busy = asyncio.run(run())
    assert early == [("launch", 1.0), ("launch", 2.0)]  # nothing finished before the second launch
    for value in (1.0, 2.0, 3.0):
        result, exc = answers[value]
        assert exc is None and np.allclose(result["y"], 2 * value + 1)
    for value in (-1.0, 5.0):  # one batch [-1, 5] whose launch raised: both requests get the error
        assert isinstance(answers[value][1], RuntimeError) and answers[value][0] is None
    assert count == 3 and busy == 0


def test_pipelined_finish_error_fails_its_batch_only():
    engine = trtflow.load(affine_model(), engine="ort")
    model = ServedModel("affine", [engine], BatchConfig(max_batch=1))
    execute = _Pipelined()
    execute.gate.set()

    async def run():
        batcher = Batcher(model, execute=execute)
        outs = await asyncio.gather(*(batcher.infer({"x": np.full((1, 4), v, np.float32)}) for v in (-2.0, 4.0)),
                                    return_exceptions=True)
        await batcher.drain()
        return outs

    bad, good = asyncio.run(run())
    assert isinstance(bad, RuntimeError) and "finish failed" in str(bad)
    assert np.allclose(good["y"], 9.0)


def test_close_answers_queued_and_running_requests():
    model, gate, execute = _gated(30.0)

    async def run():
        batcher = Batcher(model, execute=execute)
        answers = []
        for _ in range(2):  # the first runs (blocked on the gate), the second stays queued
            batcher.submit({"x": np.ones((1, 4), np.float32)}, lambda r, e: answers.append(e))
        await asyncio.sleep(0.05)
        batcher.close()
        gate.set()
        return answers

    answers = asyncio.run(run())
    assert len(answers) == 2
    for exc in answers:
        assert isinstance(exc, ProtocolError) and exc.status == 503 and "stopped" in str(exc)
