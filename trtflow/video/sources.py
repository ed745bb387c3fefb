"""Video sources: files, image folders, cameras and network streams, decoded by PyAV.

A source string picks its kind:

| source                                   | kind     | live |
|------------------------------------------|----------|------|
| ``clip.mp4`` (any container FFmpeg reads) | file     | no   |
| a folder of images (sorted by name)      | folder   | no   |
| ``/dev/video0`` or ``0``                 | camera   | yes  |
| ``rtsp://``, ``http(s)://``, ``udp://``... | network  | yes  |

``Source`` opens (and so validates) at construction: a missing file, a file FFmpeg cannot
read, an unreachable URL or a camera that does not exist raises ``UsageError`` at once.
``frames()`` then yields ``Frame``s tagged with stream id, frame index and pts; a corrupt
packet is counted and skipped, a stream that stops early is recorded, and the rest is kept.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from trtflow.deps import require
from trtflow.errors import UsageError
from trtflow.video.ffmpeg_options import unknown_options

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "rtp", "srt", "hls")
CONCEALED_SUFFIXES = {".jpg", ".jpeg"}  # damage FFmpeg's decoder conceals instead of refusing
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
DECODERS = ("cpu", "nvdec")
NOT_VIDEO = {"tty"}  # FFmpeg renders any text file as ANSI art: not a video source


@dataclass
class Frame:
    """One decoded frame and where it came from.

    Attributes:
        stream: index of the source among the sources given (0, 1, ...).
        index: frame number within its stream, from 0, counting every decoded frame.
        pts: presentation timestamp in the stream's time base (None when the container has none).
        time: ``pts`` in seconds (None when unknown).
        image: RGB ``(H, W, 3)`` uint8: a numpy array (CPU decode) or a CUDA torch tensor (NVDEC).
    """

    stream: int
    index: int
    pts: Optional[int]
    time: Optional[float]
    image: Any


@dataclass
class SourceStats:
    """What happened while reading one source (filled while it runs)."""

    decoded: int = 0
    dropped: int = 0
    corrupt: int = 0
    missing: int = 0
    ended_early: bool = False
    expected: Optional[int] = None
    errors: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(message)
        log.warning(message)


def local_path(uri: str) -> str:
    """``uri`` without a leading ``file://`` (the path of a file or folder source)."""
    return uri[len("file://"):] if uri[:len("file://")].lower() == "file://" else uri


def source_kind(uri: str) -> str:
    """"file", "folder", "camera" or "network" for a source string."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in NETWORK_SCHEMES:
        return "network"
    if scheme and scheme != "file":
        raise UsageError(f"source '{uri}': unknown scheme '{scheme}://'; use a file, a folder, /dev/videoN "
                         f"or one of {', '.join(s + '://' for s in NETWORK_SCHEMES)}")
    path = local_path(uri)
    if path.isdigit() or path.startswith("/dev/video"):
        return "camera"
    return "folder" if os.path.isdir(path) else "file"


class Source:
    """One opened source. Construct, then iterate ``frames()`` once (from any one thread).

    Args:
        uri: file, folder, ``/dev/videoN`` (or ``N``) or a network URL.
        stream: the id this source's frames carry.
        decode: "cpu" (PyAV's software decoders) or "nvdec" (FFmpeg's CUDA hwaccel; frames stay
            on the GPU and are converted to RGB there).
        options: FFmpeg demuxer options (e.g. ``{"rtsp_transport": "tcp", "listen_timeout": 10}``;
            numbers and booleans are passed as text, True as 1).
        timeout_s: seconds allowed to open a network stream or camera, and per read after that.
        max_frames: stop after this many frames (None: until the end).
        audio: also demux the first audio stream (for copying it to the output).

    Raises:
        UsageError: the source does not exist, cannot be opened or holds no video, or an option
            is one no FFmpeg format, protocol or codec has.
        MissingDependencyError: PyAV (or torch for NVDEC) is not installed.
    """

    def __init__(self, uri: str, stream: int = 0, decode: str = "cpu", options: Optional[dict] = None,
                 timeout_s: float = 10.0, max_frames: Optional[int] = None, audio: bool = False):
        if decode not in DECODERS:
            raise UsageError(f"unknown decoder '{decode}'; choose one of: {', '.join(DECODERS)}")
        self.uri = uri
        self.stream = stream
        self.decode = decode
        self.kind = source_kind(uri)
        self.live = self.kind in ("camera", "network")
        self.max_frames = max_frames
        self.stats = SourceStats()
        self.container = None
        self.video = None
        self.audio = None
        self.images: list[Path] = []
        self.fps: Optional[Fraction] = None
        self.time_base: Fraction = Fraction(1, 25)
        self.width = self.height = 0
        self.codec = ""
        self._nvdec = None
        self._gaps: list[tuple[int, str]] = []  # (frames, message): timestamp gaps not yet counted missing
        self._damaged = False  # a packet the demuxer marked corrupt was read
        self._av = require("av", "trtflow video")
        options = av_options(options or {})
        unknown = unknown_options(options)
        if unknown:  # FFmpeg would leave them unused, without a word
            raise UsageError(f"source '{uri}': FFmpeg has no option {', '.join(unknown)}; check the spelling "
                             "(`ffmpeg -h demuxer=NAME` or `protocol=NAME` lists a format's options) or drop it "
                             "(--av-option)")
        if self.kind == "folder":
            self._open_folder()
        else:
            self._open_container(options, timeout_s, audio)

    # -- opening ---------------------------------------------------------------------------
    def _open_folder(self) -> None:
        if self.decode == "nvdec":
            raise UsageError(f"source '{self.uri}' is a folder of images; --decode nvdec decodes video streams only")
        try:
            self.images = sorted(p for p in Path(local_path(self.uri)).iterdir()
                                 if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        except OSError as exc:
            raise UsageError(f"source '{self.uri}': cannot list the folder ({exc.strerror}); check its "
                             "permissions") from None
        if not self.images:
            raise UsageError(f"source '{self.uri}': the folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.codec = "image"
        self.stats.expected = len(self.images)
        self.fps = Fraction(25)
        self.time_base = Fraction(1, 25)

    def _open_container(self, options: dict, timeout_s: float, audio: bool) -> None:
        av = self._av
        path, fmt = self.uri, None
        if self.kind == "file":
            path = local_path(self.uri)
            if not os.path.exists(path):
                raise UsageError(f"source '{self.uri}': no such file")
            path = os.path.abspath(path)  # FFmpeg reads 'cam:1.mp4' as the protocol 'cam'
        elif self.kind == "camera":
            path = local_path(self.uri)
            path = f"/dev/video{path}" if path.isdigit() else path
            if not os.path.exists(path):
                found = sorted(str(p) for p in Path("/dev").glob("video*")) if os.path.isdir("/dev") else []
                raise UsageError(f"camera '{path}' does not exist; cameras here: {', '.join(found) or 'none'}")
            fmt = "v4l2"
        elif self.uri.lower().startswith(("rtsp://", "rtsps://")):
            options.setdefault("rtsp_transport", "tcp")
        hwaccel = self._hwaccel() if self.decode == "nvdec" else None
        kwargs: dict = {"format": fmt, "options": options, "hwaccel": hwaccel}
        if self.live:
            kwargs["timeout"] = None if options.get("rtsp_flags") == "listen" else (timeout_s, timeout_s)
        try:
            self.container = av.open(path, **kwargs)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            if hwaccel is not None and os.path.exists(path):
                raise UsageError(f"source '{self.uri}': --decode nvdec could not start FFmpeg's CUDA decoder: {exc}; "
                                 "use --decode cpu") from None
            refused = bool(options) and getattr(exc, "errno", None) == 22  # EINVAL: a bad option value among others
            if refused and self._opens_without(path, fmt):
                raise UsageError(f"source '{self.uri}': FFmpeg refused the options {options} ({exc}); fix or drop "
                                 "them (--av-option)") from None
            what = {"file": "not a video file FFmpeg can read", "camera": "cannot open the camera",
                    "network": "cannot open the stream (is the URL right and the server reachable?)"}[self.kind]
            hint = f"; or FFmpeg refused the options {options} (--av-option)" if refused and self.live else ""
            raise UsageError(f"source '{self.uri}': {what}: {exc}{hint}") from None
        if not self.container.streams.video or self.container.format.name in NOT_VIDEO:
            self.container.close()
            raise UsageError(f"source '{self.uri}': not a video file FFmpeg can read: no video stream in it")
        self.video = self.container.streams.video[0]
        if self.decode == "cpu":
            self.video.thread_type = "AUTO"
        if audio and self.kind == "file" and self.container.streams.audio:
            self.audio = self.container.streams.audio[0]
        ctx = self.video.codec_context
        self.width, self.height = ctx.width, ctx.height
        self.codec = self.video.codec_context.name
        self.fps = self.video.average_rate or self.video.guessed_rate or Fraction(25)
        self.time_base = self.video.time_base or Fraction(1, int(self.fps) or 25)
        if self.kind == "file" and self.video.frames:
            self.stats.expected = int(self.video.frames)

    def _opens_without(self, path: str, fmt: Optional[str]) -> bool:
        """Whether a file opens without the options (then they, not the file, were refused). Live
        sources are not opened twice (a second wait for a stream, a camera busy)."""
        if self.kind != "file":
            return False
        try:
            self._av.open(path, format=fmt).close()
        except (self._av.error.FFmpegError, OSError, ValueError):
            return False
        return True

    def _hwaccel(self):
        from trtflow.video.nvdec import nvdec_hwaccel

        return nvdec_hwaccel(self.uri)

    # -- reading ---------------------------------------------------------------------------
    @property
    def decoder(self) -> str:
        """Which decoder runs this source, in words."""
        if self.kind == "folder":
            return "cpu (image files)"
        if self.decode == "nvdec":
            return f"nvdec ({self.codec} through FFmpeg hwaccel cuda)"
        return f"cpu ({self.codec}, FFmpeg software decoder)"

    def frames(self, stop: Optional[threading.Event] = None,
               on_audio: Optional[Callable[[Any], None]] = None) -> Iterator[Frame]:
        """Decode and yield frames in presentation order until the end, ``max_frames`` or ``stop``.

        Args:
            stop: set it to end early (the frames already yielded stay valid).
            on_audio: called with each demuxed audio packet when the source was opened with ``audio``.
        """
        if self.kind == "folder":
            yield from self._folder_frames(stop)
            return
        streams = [self.video] + ([self.audio] if self.audio is not None and on_audio else [])
        step = 1 / (self.fps * self.time_base) if self.fps else None  # pts ticks per frame
        if self.max_frames is not None and self.max_frames < 1:
            return
        try:
            yield from self._decoded(streams, stop, on_audio, step)
        finally:
            self._record_gaps()  # a stop, max_frames or an early close: gaps held back count as losses

    def _decoded(self, streams: list, stop: Optional[threading.Event], on_audio: Optional[Callable[[Any], None]],
                 step: Optional[Fraction]) -> Iterator[Frame]:
        av = self._av
        index = 0
        last_time = last_pts = None
        packets = self.container.demux(*streams)
        while True:
            if stop is not None and stop.is_set():
                return
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                self.stats.ended_early = True
                self.stats.note(f"stream {self.stream} ({self.uri}): reading stopped after {index} frames: {exc}")
                packet = None  # drain the decoder below: the frames it still holds are whole
            if packet is not None:
                if not self._damaged and packet.is_corrupt:  # once is enough
                    self._damaged = True
                if packet.stream is not self.video:
                    if packet.dts is not None:
                        on_audio(packet)
                    continue
            try:
                decoded = packet.decode() if packet is not None else self.video.codec_context.decode(None)
            except NotImplementedError as exc:  # PyAV: no hardware config for this codec
                raise UsageError(f"source '{self.uri}': --decode nvdec cannot decode this stream "
                                 f"({self.codec}): {exc}; use --decode cpu") from None
            except av.error.FFmpegError as exc:
                self.stats.corrupt += 1
                self.stats.note(f"stream {self.stream} ({self.uri}): corrupt data near frame {index} skipped: {exc}")
                continue
            for frame in decoded:
                if frame.is_corrupt:
                    self.stats.corrupt += 1
                    self.stats.note(f"stream {self.stream} ({self.uri}): frame {index} is corrupt "
                                    "(the decoder concealed the damage)")
                self._check_gap(last_pts, frame.pts, index, step)
                last_pts = frame.pts if frame.pts is not None else last_pts
                out = self._frame(frame, index)
                last_time = out.time
                index += 1
                self.stats.decoded = index
                yield out
                if self.max_frames is not None and index >= self.max_frames:
                    return
            if packet is None:  # drained after a read error
                break
        # the stream ended (a stop, a return or the caller closing frames() leaves before this)
        self._check_end(index, last_time)

    def _check_gap(self, last: Optional[int], pts: Optional[int], index: int, step: Optional[Fraction]) -> None:
        """Count frames missing between two timestamps (a damaged file or a lossy stream)."""
        if last is None or pts is None or not step:
            return
        lost = round((pts - last) / step) - 1 if step > 0 else 0
        if lost < 1:
            return
        # a file without a frame count and no damage read so far (damage is read before the gap it
        # causes): a variable frame time (a Matroska or WebM clip), not a loss
        if self.kind == "file" and self.stats.expected is None and not (self._damaged or self.stats.corrupt):
            return
        self._gaps.append((lost, f"stream {self.stream} ({self.uri}): about {lost} frame(s) missing before "
                                 f"frame {index} (pts {last} -> {pts}); damaged or lost data"))
        if self.kind != "file" or self.stats.expected is None:
            self._record_gaps()
        # else held back to the end: a file that yields every frame it declares has variable
        # frame times (an animated GIF, a phone's clip), not losses

    def _record_gaps(self) -> None:
        for lost, message in self._gaps:
            self.stats.missing += lost
            self.stats.note(message)
        self._gaps.clear()

    def _frame(self, frame: Any, index: int) -> Frame:
        pts = frame.pts
        time = float(pts * self.time_base) if pts is not None else None
        if self.decode == "nvdec":
            if self._nvdec is None:
                from trtflow.video.nvdec import NV12Converter

                self._nvdec = NV12Converter(self.uri)
            image = self._nvdec(frame)
        else:
            image = frame.to_ndarray(format="rgb24")
        return Frame(self.stream, index, pts, time, image)

    def _folder_frames(self, stop: Optional[threading.Event]) -> Iterator[Frame]:
        av = self._av
        index = 0
        for n, path in enumerate(self.images):
            if stop is not None and stop.is_set() or self.max_frames is not None and index >= self.max_frames:
                return
            strict = path.suffix.lower() in CONCEALED_SUFFIXES
            try:
                try:
                    image = decode_image(av, str(path), strict=strict)
                except ValueError:
                    if not strict:  # the lenient read failed already: nothing to retry
                        raise
                    image = decode_image(av, str(path))  # damaged: read again, letting the decoder conceal it
                    self.stats.corrupt += 1
                    self.stats.note(f"stream {self.stream}: image '{path}' is damaged (the decoder concealed the damage)")
            except ValueError as exc:
                self.stats.corrupt += 1
                self.stats.note(f"stream {self.stream}: image '{path}' could not be decoded, skipped: {exc}")
                continue
            if not self.width:  # a folder's size is its first image's (a video's is its first frame's)
                self.height, self.width = image.shape[:2]
            self.stats.decoded = index + 1
            yield Frame(self.stream, index, n, n / 25.0, image)
            index += 1

    def _check_end(self, decoded: int, last_time: Optional[float]) -> None:
        """Record a file that ended before its declared length (and the gaps in its timestamps as
        frames missing, unless it yielded every frame it declares)."""
        if self.stats.expected is not None and decoded >= self.stats.expected:
            self._gaps.clear()
        self._record_gaps()
        if self.kind != "file" or self.max_frames is not None and decoded >= self.max_frames:
            return
        expected = self.stats.expected
        end = self._declared_end()

        def reached_end(slack: float) -> bool:  # the last frame read lies within ``slack`` frames of the end
            return bool(end and last_time is not None and self.fps and last_time >= end - slack / float(self.fps))

        if expected is not None:  # frames lost inside the stream are counted missing, not an early end
            short = decoded + self.stats.missing < expected and not reached_end(1.5)
        else:  # no frame at all (last_time None) from a stream that declares a duration is short too
            short = bool(end and self.fps) and not reached_end(3)
        if short and not self.stats.ended_early:
            self.stats.ended_early = True
            self.stats.note(f"stream {self.stream} ({self.uri}): ended early after {decoded} frames"
                            + (f" of {expected}" if expected else ""))

    def _declared_end(self) -> Optional[float]:
        """When (seconds) the video stream should end: its start plus its duration, else Matroska's
        DURATION tag of the stream (the end time of its last frame), else, for a file holding the
        video alone that starts at 0 (as FLV), the container's duration. None when none is declared."""
        v = self.video
        if v.duration:
            start = float(v.start_time * v.time_base) if v.start_time else 0.0
            return start + float(v.duration * v.time_base)
        tag = (v.metadata or {}).get("DURATION", "")
        try:
            h, m, sec = tag.split(":")
            return int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            pass
        c = self.container
        if c is not None and len(c.streams) == 1 and c.duration and not c.start_time:
            return c.duration / 1e6  # AV_TIME_BASE: microseconds
        return None

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None

    def describe(self) -> dict:
        """Kind, size, rate, codec and decoder of the source, for summaries."""
        return {"stream": self.stream, "source": self.uri, "kind": self.kind, "live": self.live,
                "width": self.width, "height": self.height, "fps": float(self.fps) if self.fps else None,
                "codec": self.codec, "decoder": self.decoder, "audio": self.audio is not None}


def av_options(options: dict) -> dict[str, str]:
    """FFmpeg options as the text FFmpeg parses: numbers as written, booleans as 1 / 0."""
    return {str(k): ("1" if v else "0") if isinstance(v, bool) else str(v) for k, v in options.items()}


def decode_image(av: Any, path: str, strict: bool = False) -> Any:
    """The first picture of an image file, as an HWC RGB uint8 array.

    Args:
        strict: refuse damage the decoder would conceal (a JPEG cut short comes back partly grey
            otherwise). Folder sources ask it of JPEGs only: FFmpeg's other image decoders refuse
            damage anyway, and some would refuse whole files this way (an RGBA TIFF).

    Raises:
        ValueError: FFmpeg cannot read a picture from it (its message is FFmpeg's).
    """
    try:
        with av.open(os.path.abspath(path)) as container:  # 'shot:1.png' is no protocol 'shot'
            stream = container.streams.video[0]
            if strict:
                stream.codec_context.options = {"err_detect": "explode"}
            return next(container.decode(stream)).to_ndarray(format="rgb24")
    except (av.error.FFmpegError, StopIteration, IndexError) as exc:  # IndexError: no picture stream in it
        raise ValueError(str(exc)) from None


def open_sources(uris: list[str], decode: str = "cpu", options: Optional[dict] = None, timeout_s: float = 10.0,
                 max_frames: Optional[int] = None, audio: bool = False) -> list[Source]:
    """Open every source (stream ids 0, 1, ... in order); close those opened if one fails."""
    if not uris:
        raise UsageError("no source given; pass a video file, an image folder, /dev/videoN or a URL")
    opened: list[Source] = []
    try:
        for i, uri in enumerate(uris):
            opened.append(Source(uri, i, decode, options, timeout_s, max_frames, audio))
    except BaseException:
        for s in opened:
            s.close()
        raise
    return opened
