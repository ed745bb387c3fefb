"""Outputs of the video pipeline: H.264 files through PyAV's libx264 (audio copied through) and
JSON Lines with one record per frame."""

from __future__ import annotations

import collections
import errno
import io
import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

import numpy as np

from trtflow.arrays import strict_json
from trtflow.deps import require
from trtflow.errors import UsageError
from trtflow.video.sources import av_options

log = logging.getLogger(__name__)

DEFAULT_ENCODER_OPTIONS = {"preset": "veryfast", "crf": "23"}
# FFmpeg's errors opening the file at the first packet (EPERM is not one: MXF refuses streams with it)
_FILE_ERRNOS = {getattr(errno, n) for n in ("ENOENT", "EACCES", "EISDIR", "ENOTDIR", "ENOSPC", "EROFS", "EDQUOT")
                if hasattr(errno, n)}  # EDQUOT is not on every platform


def output_paths(out: str, streams: int) -> list[str]:
    """One video file per stream: ``OUT`` itself for one stream, ``OUT-s0.mp4``, ``OUT-s1.mp4``... for several."""
    if streams == 1:
        return [out]
    p = Path(out)
    return [str(p.with_name(f"{p.stem}-s{i}{p.suffix}")) for i in range(streams)]


class VideoWriter:
    """Annotated frames -> an H.264 file; the source's audio packets are copied through.

    The video stream is created at the first frame (its size is the drawn frame's: a super-
    resolution task doubles it; an odd side is cropped to even, a side of 1 pixel padded to 2,
    as yuv420p needs). Frames keep their source timestamps, so audio stays in sync; a frame
    without one (a raw H.264 file), or with one going back, is placed one frame time after the last.

    Args:
        path: output file (the container follows the suffix: .mp4, .mkv, .mov, .ts).
        fps: frame rate of the source.
        time_base: time base of the source's timestamps.
        audio: the source's audio stream to copy (None: no audio).
        codec: encoder name (default libx264).
        options: encoder options (default: preset veryfast, crf 23); numbers are passed as text.
    """

    def __init__(self, path: str, fps: Fraction, time_base: Fraction, audio: Any = None,
                 codec: str = "libx264", options: Optional[dict] = None):
        self.av = require("av", "trtflow video --out")
        self.path = path
        self.fps = fps or Fraction(25)
        self.time_base = time_base or Fraction(1, 25)
        self.codec = codec
        self.options = av_options(DEFAULT_ENCODER_OPTIONS if options is None else options)  # 18 -> "18"
        parent = Path(path).parent
        if not parent.is_dir():
            raise UsageError(f"--out '{path}': the folder '{parent}' does not exist")
        if Path(path).is_dir():  # FFmpeg opens the file only at the first packet, after the work began
            raise UsageError(f"--out '{path}' is a folder; give a file name, or remove the folder")
        try:
            self.container = self.av.open(os.path.abspath(path), "w")  # 'out:1.mp4' is no protocol 'out'
        except (self.av.error.FFmpegError, ValueError) as exc:
            raise UsageError(f"--out '{path}': cannot write a video there ({exc}); use a .mp4, .mkv or .mov name") from None
        refused = _refuses_codec(self.av, self.container.format.name, codec)
        if refused:
            self.container.close()
            self.container = None
            raise UsageError(f"--out '{path}': {refused}: this kind of file cannot hold {codec} video; use a .mp4, "
                             ".mkv or .mov name")
        self.audio_out = None
        if audio is not None:
            try:
                self.audio_out = self.container.add_stream_from_template(audio)
            except ValueError as exc:  # PyAV: "'avi' format does not support 'opus' codec"
                self.container.close()
                self.container = None
                raise UsageError(f"--out '{path}': {exc}, so the source's {audio.codec_context.name} audio cannot be "
                                 "copied; use a .mkv name, or drop the audio (--no-audio)") from None
        self._header = False  # written with the first packet muxed
        self.pending_audio: collections.deque = collections.deque()  # appended from the decode thread
        self.video = None
        self.frames = 0
        self.audio_packets = 0
        self._last_pts: Optional[int] = None
        self._frame_ticks = max(1, round(1 / (self.fps * self.time_base)))  # one frame in the time base

    def add_audio(self, packet: Any) -> None:
        """Queue one audio packet of the source (thread-safe; muxed from the writer's thread)."""
        if self.audio_out is not None:
            self.pending_audio.append(packet)

    def write(self, image: np.ndarray, pts: Optional[int]) -> None:
        """Encode one RGB ``(H, W, 3)`` uint8 frame shown at ``pts`` (source time base)."""
        av = self.av
        h, w = image.shape[:2]
        if self.video is None:
            self.video = self.container.add_stream(self.codec, rate=self.fps, options=self.options)
            self.video.width, self.video.height = _even(w), _even(h)
            self.video.pix_fmt = "yuv420p"
            self.video.codec_context.time_base = self.time_base
            try:
                self.video.codec_context.open()
            except av.error.FFmpegError as exc:
                raise UsageError(f"--out '{self.path}': {self.codec} refused the encoder options {self.options} "
                                 f"({exc}); fix or drop them (encoder_options)") from None
        if (_even(w), _even(h)) != (self.video.width, self.video.height):
            raise UsageError(f"--out '{self.path}': frame size {w}x{h} changed mid-stream (the video is "
                             f"{self.video.width}x{self.video.height}) and a video file holds one size; "
                             "give frames of one size (e.g. resize the images of a folder), or drop --out "
                             "and keep --jsonl")
        image = image[: self.video.height, : self.video.width]
        if image.shape[:2] != (self.video.height, self.video.width):  # a side of 1 pixel: repeated to 2
            image = np.pad(image, ((0, self.video.height - image.shape[0]), (0, self.video.width - image.shape[1]),
                                   (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        if pts is None or (self._last_pts is not None and pts <= self._last_pts):
            # no timestamp (a raw H.264 file), or one going back: one frame time after the last
            pts = 0 if self._last_pts is None else self._last_pts + self._frame_ticks
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = self.time_base
        for packet in self.video.encode(frame):
            self._mux(packet)
        self.frames += 1
        self._flush_audio()

    def _mux(self, packet: Any) -> None:
        """Mux one packet; the first writes the file's header, which FFmpeg refuses for streams the
        container cannot hold (H.264 in .y4m or .ogv, Opus or FLAC audio in .mov)."""
        try:
            self.container.mux(packet)
        except self.av.error.FFmpegError as exc:
            if self._header:
                raise
            opened = getattr(exc, "errno", None) not in _FILE_ERRNOS
            self._discard(remove=opened)  # a file FFmpeg could not open is not its own to remove
            if not opened:  # the file itself, not what it holds
                raise UsageError(f"--out '{self.path}': cannot write there ({exc.strerror})") from None
            if self.audio_out is None:
                raise UsageError(f"--out '{self.path}': FFmpeg cannot write {self.codec} video into this kind of "
                                 f"file ({exc}); use a .mp4, .mkv or .mov name") from None
            raise UsageError(f"--out '{self.path}': FFmpeg cannot write this file with {self.codec} video and the "
                             f"source's {self.audio_out.codec_context.name} audio ({exc}); use a .mkv name, or drop "
                             "the audio (--no-audio)") from None
        self._header = True

    def _discard(self, remove: bool = True) -> None:
        """Close, and remove, a file whose header FFmpeg refused (it holds part of one, no video)."""
        try:
            self.container.close()
        except self.av.error.FFmpegError:
            pass
        self.container = None
        if remove:
            Path(self.path).unlink(missing_ok=True)

    def _flush_audio(self) -> None:
        if self.video is None:  # the header is written with the first video packet
            return
        while self.pending_audio:
            packet = self.pending_audio.popleft()
            packet.stream = self.audio_out
            self._mux(packet)
            self.audio_packets += 1

    def close(self) -> None:
        """Flush the encoder and the audio left, and close the file."""
        if self.container is None:
            return
        try:
            if self.video is not None:
                for packet in self.video.encode():
                    self._mux(packet)
                self._flush_audio()
        finally:
            if self.container is not None:  # None: discarded, its header refused
                self.container.close()
                self.container = None


def _refuses_codec(av: Any, container_format: str, codec: str) -> Optional[str]:
    """FFmpeg's reason when ``container_format`` cannot hold ``codec`` streams, else None. Asked
    of a throwaway in-memory container, as the stream itself is only made at the first frame."""
    probe = av.open(io.BytesIO(), "w", format=container_format)
    try:
        probe.add_stream(codec)
    except ValueError as exc:  # PyAV: "'webm' format does not support 'libx264' codec"
        return str(exc)
    finally:
        probe.close()
    return None


def _even(side: int) -> int:
    """The encoded size of a frame side: yuv420p needs even sides, so an odd one loses its last
    pixel, except a side of 1, which is padded to 2."""
    return side - side % 2 if side > 1 else 2


class JsonlWriter:
    """One JSON object per line: ``{"stream", "frame", "pts", "time", ...task fields}``."""

    def __init__(self, path: str):
        try:
            self.file = open(path, "w", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--jsonl '{path}': cannot write there ({exc.strerror})") from None
        self.path = path
        self.records = 0

    def write(self, record: dict) -> None:
        """One record as strict JSON: NaN and infinities become the strings "nan", "inf", "-inf"
        (bare ``NaN`` is not JSON; parsers refuse it), as ``--json`` writes them."""
        self.file.write(strict_json(record) + "\n")
        self.records += 1

    def close(self) -> None:
        self.file.close()

