"""An exact H.264 writer for synthetic frames in which little changes from one frame to the next.

x264 analyses every macroblock of every frame: about 2.5 ms of one core per 720p frame even when the frame is
blank, more than the emulator's whole budget. The emulator's frames are rows of flat colour, prerendered text
and a few elements that slide sideways, so this writer codes only what changed, with four kinds of macroblock
and no transform at all:

- ``I_PCM``: the macroblock's 384 samples as they are (text, anything new);
- intra 16x16 with horizontal or vertical prediction and no residual: rows (or columns) that continue the
  neighbour's edge, so a backdrop whose rows are each one colour costs a few bits a macroblock;
- ``P_Skip``: unchanged since the previous frame;
- P 16x16 with a whole-pixel motion vector and no residual: content that moved by an offset the caller names.

Every decision is checked against the pixels, so decoded frames equal the given frames exactly whatever the
hints say, as long as ``damage`` covers every change. The stream is Constrained Baseline (CAVLC, one slice and
one reference frame, no deblocking, no B-frames), tagged BT.709 limited range, in an MP4 with ``+faststart``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from numpy.lib.stride_tricks import as_strided

from vidqueue.media.encode import removed_on_failure, written, yuv420_planes, yuv420_shape
from vidqueue.media.types import VideoInfo

_MB = 16
_LOG2_MAX_FRAME_NUM = 8
# Level 4.2: up to 8704 macroblocks a frame (1280x1280 is 6400) and a minimum compression ratio of 2, which the
# emulator's first frames (about 0.1 MB at 720p) keep well within; a frame of noise, all I_PCM, would not.
_LEVEL_IDC = 42
_MAX_MBS = 8704

# Intra 16x16 prediction modes (luma mb_type offset; chroma intra_chroma_pred_mode).
_LUMA_VERTICAL, _LUMA_HORIZONTAL = 0, 1
_CHROMA_HORIZONTAL, _CHROMA_VERTICAL = 1, 2

_EMULATION = re.compile(b"\x00\x00(?=[\x00-\x03])")


@dataclass(frozen=True)
class Damage:
    """A rectangle (pixels, end exclusive) that may have changed, and how its content moved, if it did."""

    x0: int
    y0: int
    x1: int
    y1: int
    dx: int = 0  # content moved right by dx and down by dy since the previous frame; both even
    dy: int = 0


def _ue_code(value: int) -> str:
    x = value + 1
    return "0" * (x.bit_length() - 1) + format(x, "b")


_UE = [_ue_code(v) for v in range(1024)]
_SE = {v: _ue_code(2 * v - 1 if v > 0 else -2 * v) for v in range(-512, 513)}


def _ue(value: int) -> str:
    """Exp-Golomb ue(v) as a bit string."""
    return _UE[value] if value < 1024 else _ue_code(value)


def _se(value: int) -> str:
    """Exp-Golomb se(v) as a bit string."""
    code = _SE.get(value)
    return code if code is not None else _ue_code(2 * value - 1 if value > 0 else -2 * value)


def _u(value: int, n: int) -> str:
    return format(value, f"0{n}b")


def _pack(bits: str) -> bytes:
    """Bit string (zero-padded to whole bytes) to bytes."""
    bits += "0" * (-len(bits) & 7)
    return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""


class _Rbsp:
    """An RBSP built from bit strings and byte-aligned raw runs (I_PCM samples)."""

    __slots__ = ("_bits", "_out")

    def __init__(self, *fields: str) -> None:
        self._out = bytearray()
        self._bits: list[str] = list(fields)

    def add(self, bits: str) -> None:
        self._bits.append(bits)

    def raw(self, data: bytes) -> None:
        """Zero bits up to a byte boundary (pcm_alignment_zero_bit), then ``data``."""
        self._out += _pack("".join(self._bits))
        self._bits = []
        self._out += data

    def done(self) -> bytes:
        """The RBSP with its stop bit and alignment."""
        self._bits.append("1")
        return bytes(self._out + _pack("".join(self._bits)))


def _nal(ref_idc: int, kind: int, rbsp: bytes) -> bytes:
    """A NAL unit with its start code (Annex B; the MP4 muxer rewrites it), emulation prevention applied."""
    return b"\x00\x00\x00\x01" + bytes([(ref_idc << 5) | kind]) + _EMULATION.sub(b"\x00\x00\x03", rbsp)


def _coeff_token_zero(nc: int) -> str:
    """coeff_token of a block with no coefficients, by nC (table 9-5)."""
    return "1" if nc < 2 else "11" if nc < 4 else "1111" if nc < 8 else "000011"


# Intra 16x16 macroblock code words, indexed by luma mode * 8 + chroma mode index * 4 + nC class: mb_type
# I_16x16_<mode>_0_0, intra_chroma_pred_mode, mb_qp_delta 0 and an empty Intra16x16DCLevel block.
_INTRA_WORDS = [
    _ue(1 + luma) + _ue(chroma) + _se(0) + _coeff_token_zero(nc)
    for luma in (_LUMA_VERTICAL, _LUMA_HORIZONTAL)
    for chroma in (_CHROMA_HORIZONTAL, _CHROMA_VERTICAL)
    for nc in (0, 2, 4, 8)
]
_P16X16_NO_RESIDUAL = _ue(0)  # mb_type P_L0_16x16 (and coded_block_pattern 0, the same code)
_UNAVAILABLE = (-1, 0, 0)  # (refIdx, mvx, mvy) of a neighbour outside the picture
_INTRA = (-1, 0, 0)
_STILL = (0, 0, 0)


def _median(a: int, b: int, c: int) -> int:
    return max(min(a, b), min(max(a, b), c))


def _blocks(plane: np.ndarray, size: int) -> np.ndarray:
    """A view of every size x size block of a plane at every pixel position: [y, x] is the block at (x, y)."""
    rows, cols = plane.shape
    sr, sc = plane.strides
    return as_strided(plane, (rows - size + 1, cols - size + 1, size, size), (sr, sc, sr, sc), writeable=False)


def _chroma(frame: np.ndarray) -> np.ndarray:
    """Both chroma planes of a yuv420p array as one (2, h/2, w/2) view (they are stored back to back)."""
    rows, width = frame.shape
    height = rows * 2 // 3
    return frame.reshape(-1)[width * height :].reshape(2, height // 2, width // 2)


def _chroma_blocks(frame: np.ndarray) -> np.ndarray:
    """Like ``_blocks`` for both chroma planes at once: [plane, y, x] is an 8x8 block."""
    chroma = _chroma(frame)
    planes, rows, cols = chroma.shape
    sp, sr, sc = chroma.strides
    return as_strided(chroma, (planes, rows - 7, cols - 7, 8, 8), (sp, sr, sc, sr, sc), writeable=False)


class ExactH264Encoder:
    """Turns yuv420p frames into H.264 access units whose decoded pictures equal the frames exactly."""

    def __init__(self, width: int, height: int, fps: int) -> None:
        if width <= 0 or height <= 0 or width % _MB or height % _MB:
            raise ValueError(f"width and height must be positive multiples of 16, got {width}x{height}")
        if (width // _MB) * (height // _MB) > _MAX_MBS:
            raise ValueError(f"{width}x{height} is larger than this writer's level allows")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.width, self.height, self.fps = width, height, fps
        self._mbw, self._mbh = width // _MB, height // _MB
        # The decoder's picture, which equals the last frame given.
        self._ref = np.empty(yuv420_shape(width, height), np.uint8)
        ref_y = yuv420_planes(self._ref)[0]
        self._ref_luma = _blocks(ref_y, _MB)
        self._ref_chroma = _chroma_blocks(self._ref)
        # Writable macroblock views of the reference: [my, row, mx, col].
        self._ref_mb_luma = ref_y.reshape(self._mbh, _MB, self._mbw, _MB)
        self._ref_mb_chroma = _chroma(self._ref).reshape(2, self._mbh, 8, self._mbw, 8)
        self._count = 0

    # --- parameter sets ---

    def parameter_sets(self) -> bytes:
        """The SPS and PPS NAL units."""
        sps = _Rbsp(
            _u(66, 8),  # profile_idc: Baseline
            _u(0b11000000, 8),  # constraint_set0 and 1: Constrained Baseline
            _u(_LEVEL_IDC, 8),
            _ue(0),  # seq_parameter_set_id
            _ue(_LOG2_MAX_FRAME_NUM - 4),
            _ue(2),  # pic_order_cnt_type 2: output order is decoding order
            _ue(1),  # max_num_ref_frames
            "0",  # gaps_in_frame_num_value_allowed_flag
            _ue(self._mbw - 1),
            _ue(self._mbh - 1),
            "110",  # frame_mbs_only, direct_8x8_inference, no frame_cropping
            "1",  # vui_parameters_present_flag
            "00",  # no aspect_ratio_info, no overscan_info
            "1",  # video_signal_type_present_flag
            _u(5, 3),  # video_format: unspecified
            "0",  # video_full_range_flag: limited ("TV") range
            "1",  # colour_description_present_flag
            _u(1, 8),  # colour_primaries: BT.709
            _u(1, 8),  # transfer_characteristics: BT.709
            _u(1, 8),  # matrix_coefficients: BT.709
            "0",  # chroma_loc_info_present_flag
            "1",  # timing_info_present_flag
            _u(1, 32),  # num_units_in_tick
            _u(2 * self.fps, 32),  # time_scale (two ticks a frame)
            "1",  # fixed_frame_rate_flag
            "000",  # no NAL or VCL HRD, no pic_struct
            "1",  # bitstream_restriction_flag
            "1",  # motion_vectors_over_pic_boundaries_flag
            _ue(0),  # max_bytes_per_pic_denom
            _ue(0),  # max_bits_per_mb_denom
            _ue(15),  # log2_max_mv_length_horizontal
            _ue(15),  # log2_max_mv_length_vertical
            _ue(0),  # max_num_reorder_frames: a decoder shows each frame at once
            _ue(1),  # max_dec_frame_buffering
        )
        pps = _Rbsp(
            _ue(0),  # pic_parameter_set_id
            _ue(0),  # seq_parameter_set_id
            "00",  # CAVLC, no bottom_field_pic_order_in_frame_present_flag
            _ue(0),  # num_slice_groups_minus1
            _ue(0),  # num_ref_idx_l0_default_active_minus1
            _ue(0),  # num_ref_idx_l1_default_active_minus1
            "000",  # no weighted prediction
            _se(0),  # pic_init_qp_minus26
            _se(0),  # pic_init_qs_minus26
            _se(0),  # chroma_qp_index_offset
            "100",  # deblocking_filter_control_present, no constrained intra, no redundant_pic_cnt
        )
        return _nal(3, 7, sps.done()) + _nal(3, 8, pps.done())

    # --- frames ---

    def encode(self, frame: np.ndarray, damage: Sequence[Damage] | None = None) -> bytes:
        """One access unit for ``frame`` (the first is an IDR picture); ``damage`` None means anything changed."""
        if frame.shape != self._ref.shape or frame.dtype != np.uint8 or not frame.flags.c_contiguous:
            raise ValueError(
                f"expected a C-contiguous uint8 array of shape {self._ref.shape}, got {frame.dtype} {frame.shape}"
            )
        unit = self._intra(frame) if self._count == 0 else self._inter(frame, damage)
        self._count += 1
        return unit

    def _intra(self, frame: np.ndarray) -> bytes:
        mbh, mbw = self._mbh, self._mbw
        y, u, v = yuv420_planes(frame)
        luma_h, luma_v = _predictable(y, _MB)
        u_h, u_v = _predictable(u, _MB // 2)
        v_h, v_v = _predictable(v, _MB // 2)
        chroma_h, chroma_v = u_h & v_h, u_v & v_v
        pcm = ~(luma_h | luma_v) | ~(chroma_h | chroma_v)
        # nC of each predicted macroblock's DC block: I_PCM neighbours count 16 coefficients, the others none;
        # with one neighbour missing, nC is the other one's count.
        n_a = np.zeros((mbh, mbw), np.int16)
        n_b = np.zeros((mbh, mbw), np.int16)
        n_a[:, 1:] = 16 * pcm[:, :-1]
        n_b[1:, :] = 16 * pcm[:-1, :]
        both = np.zeros((mbh, mbw), bool)
        both[1:, 1:] = True
        nc = np.where(both, (n_a + n_b + 1) >> 1, n_a + n_b)
        nc_class = (nc >= 2).astype(np.int8) + (nc >= 4) + (nc >= 8)
        word = np.where(luma_h, 8, 0) + np.where(chroma_h, 0, 4) + nc_class
        word[pcm] = -1
        ys, xs = np.nonzero(pcm)
        blocks = y.reshape(mbh, _MB, mbw, _MB)[ys, :, xs, :].reshape(-1, 256)
        chroma = _chroma(frame).reshape(2, mbh, 8, mbw, 8)[:, ys, :, xs, :].reshape(-1, 128)
        samples = np.concatenate((blocks, chroma), axis=1)
        rbsp = _Rbsp(
            _ue(0),  # first_mb_in_slice
            _ue(7),  # slice_type: I (every slice of the picture)
            _ue(0),  # pic_parameter_set_id
            _u(0, _LOG2_MAX_FRAME_NUM),  # frame_num
            _ue(0),  # idr_pic_id
            "00",  # no_output_of_prior_pics_flag, long_term_reference_flag
            _se(0),  # slice_qp_delta
            _ue(1),  # disable_deblocking_filter_idc: off, so decoded pixels stay exact
        )
        words = _INTRA_WORDS
        next_pcm = 0
        for row in word.tolist():
            start = 0
            for mx, code in enumerate(row):
                if code < 0:
                    rbsp.add("".join(map(words.__getitem__, row[start:mx])))
                    rbsp.add(_ue(25))  # I_PCM
                    rbsp.raw(samples[next_pcm].tobytes())
                    next_pcm += 1
                    start = mx + 1
            rbsp.add("".join(map(words.__getitem__, row[start:])))
        self._ref[...] = frame
        return self.parameter_sets() + _nal(3, 5, rbsp.done())

    def _inter(self, frame: np.ndarray, damage: Sequence[Damage] | None) -> bytes:
        mbw, mbh = self._mbw, self._mbh
        y = yuv420_planes(frame)[0]
        cur_luma, cur_chroma = _blocks(y, _MB), _chroma_blocks(frame)
        if damage is None:
            changed_map = (y.reshape(mbh, _MB, mbw, _MB) != self._ref_mb_luma).any(axis=(1, 3))
            chroma = _chroma(frame).reshape(2, mbh, 8, mbw, 8)
            changed_map |= (chroma != self._ref_mb_chroma).any(axis=(0, 2, 4))
            addrs = np.flatnonzero(changed_map)
            dx = np.zeros(len(addrs), np.int64)
            dy = dx
        else:
            # Candidate macroblocks and the motion each may have (a rectangle with motion wins over one without).
            motion_of: dict[int, tuple[int, int]] = {}
            for area in damage:
                if area.dx % 2 or area.dy % 2:
                    raise ValueError(f"motion must be whole chroma samples (even), got ({area.dx}, {area.dy})")
                x0, y0 = max(0, area.x0) // _MB, max(0, area.y0) // _MB
                x1 = min(mbw, -(-min(self.width, area.x1) // _MB))
                y1 = min(mbh, -(-min(self.height, area.y1) // _MB))
                motion = (area.dx, area.dy)
                for my in range(y0, y1):
                    for addr in range(my * mbw + x0, my * mbw + x1):
                        if motion_of.get(addr, (0, 0)) == (0, 0):
                            motion_of[addr] = motion
            order = sorted(motion_of)  # decoding (raster) order, which the I_PCM samples below follow
            addrs = np.array(order, np.int64)
            moves = np.array([motion_of[addr] for addr in order], np.int64).reshape(-1, 2)
            dx, dy = moves[:, 0], moves[:, 1]
        py, px = (addrs // mbw) * _MB, (addrs % mbw) * _MB
        luma = cur_luma[py, px]
        chroma = cur_chroma[:, py // 2, px // 2]
        changed = (luma != self._ref_luma[py, px]).any(axis=(1, 2))
        changed |= (chroma != self._ref_chroma[:, py // 2, px // 2]).any(axis=(0, 2, 3))
        keep = np.flatnonzero(changed)
        addrs, py, px, dx, dy = addrs[keep], py[keep], px[keep], dx[keep], dy[keep]
        luma, chroma = luma[keep], chroma[:, keep]
        # Moved: equal to the reference displaced by the rectangle's motion, with the source inside the picture.
        sy, sx = py - dy, px - dx
        inside = ((dx != 0) | (dy != 0)) & (sy >= 0) & (sx >= 0) & (sy <= self.height - _MB) & (sx <= self.width - _MB)
        sy, sx = np.where(inside, sy, py), np.where(inside, sx, px)
        moved = inside & (luma == self._ref_luma[sy, sx]).all(axis=(1, 2))
        moved &= (chroma == self._ref_chroma[:, sy // 2, sx // 2]).all(axis=(0, 2, 3))
        pcm = ~moved
        samples = np.concatenate((luma[pcm].reshape(-1, 256), chroma[:, pcm].transpose(1, 0, 2, 3).reshape(-1, 128)), 1)
        unit = self._write_inter(addrs.tolist(), moved.tolist(), (-4 * dx).tolist(), (-4 * dy).tolist(), samples)
        # The decoder's picture now holds the new blocks.
        rows, cols = addrs // mbw, addrs % mbw
        self._ref_mb_luma[rows, :, cols, :] = luma
        self._ref_mb_chroma[:, rows, :, cols, :] = chroma.transpose(1, 0, 2, 3)
        return unit

    def _write_inter(
        self, addrs: list[int], moved: list[bool], mvx: list[int], mvy: list[int], samples: np.ndarray
    ) -> bytes:
        mbw, total = self._mbw, self._mbw * self._mbh
        # (refIdx, mvx, mvy) of every coded macroblock, in decoding order: quarter-pel vectors, refIdx -1 for
        # I_PCM (intra); any macroblock not here is skipped with a zero vector.
        coded = {
            addr: (0, vx, vy) if is_moved else _INTRA
            for addr, is_moved, vx, vy in zip(addrs, moved, mvx, mvy, strict=True)
        }
        get = coded.get

        def predicted(addr: int) -> tuple[int, int]:
            """The motion vector prediction of a 16x16 partition (8.4.1.3)."""
            mx = addr % mbw
            a = get(addr - 1, _STILL) if mx else _UNAVAILABLE
            if addr < mbw:
                # Neither B nor C exists: both take A's values (8.4.1.3.1), so the median is A.
                return (a[1], a[2])
            b = get(addr - mbw, _STILL)
            # C is the macroblock above right, or above left where that is outside the picture.
            c = get(addr - mbw + (1 if mx + 1 < mbw else -1), _STILL) if mx + 1 < mbw or mx else _UNAVAILABLE
            hits = (a[0] == 0) + (b[0] == 0) + (c[0] == 0)
            if hits == 1:
                only = a if a[0] == 0 else b if b[0] == 0 else c
                return (only[1], only[2])
            return (_median(a[1], b[1], c[1]), _median(a[2], b[2], c[2]))

        # A skipped macroblock takes the predicted vector unless its left or upper neighbour is still, so below
        # and right of moving or intra macroblocks a skip could move; those are coded as still (vector 0).
        for addr, (ref, vx, vy) in list(coded.items()):
            right = addr + 1
            if (ref or vx or vy) and right % mbw and right not in coded and addr >= mbw:
                above = get(right - mbw, _STILL)
                if above != _STILL and predicted(right) != (0, 0):
                    coded[right] = _STILL
        rbsp = _Rbsp(
            _ue(0),  # first_mb_in_slice
            _ue(5),  # slice_type: P (every slice of the picture)
            _ue(0),  # pic_parameter_set_id
            _u(self._count % (1 << _LOG2_MAX_FRAME_NUM), _LOG2_MAX_FRAME_NUM),  # frame_num
            "000",  # no ref_idx override, no list modification, sliding-window marking
            _se(0),  # slice_qp_delta
            _ue(1),  # disable_deblocking_filter_idc
        )
        last = -1
        next_pcm = 0
        for addr, (ref, vx, vy) in sorted(coded.items()):
            run = _ue(addr - last - 1)  # mb_skip_run
            last = addr
            if ref < 0:
                rbsp.add(run + _ue(30))  # I_PCM in a P slice
                rbsp.raw(samples[next_pcm].tobytes())
                next_pcm += 1
            else:
                px, py = predicted(addr)
                rbsp.add(run + _P16X16_NO_RESIDUAL + _se(vx - px) + _se(vy - py) + _P16X16_NO_RESIDUAL)
        if last < total - 1:
            rbsp.add(_ue(total - 1 - last))
        return _nal(2, 1, rbsp.done())


def _predictable(plane: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per macroblock: whether horizontal / vertical prediction from its neighbour reproduces it exactly."""
    rows, cols = plane.shape
    mbh, mbw = rows // size, cols // size
    blocks = plane.reshape(mbh, size, mbw, size)
    horizontal = np.zeros((mbh, mbw), bool)
    vertical = np.zeros((mbh, mbw), bool)
    right_edges = plane[:, size - 1 :: size].reshape(mbh, size, mbw)
    horizontal[:, 1:] = (blocks[:, :, 1:, :] == right_edges[:, :, :-1, None]).all(axis=(1, 3))
    bottom_edges = plane[size - 1 :: size, :].reshape(mbh, mbw, size)
    vertical[1:, :] = (blocks[1:, :, :, :] == bottom_edges[:-1, None, :, :]).all(axis=(1, 3))
    return horizontal, vertical


@dataclass(frozen=True)
class FrameUpdate:
    """A frame (yuv420p, may be the same buffer every time) and where it changed since the one before."""

    frame: np.ndarray
    damage: Sequence[Damage] | None = None


def encode_exact_mp4(updates: Iterable[FrameUpdate], *, width: int, height: int, fps: int, path: Path) -> VideoInfo:
    """Write frames as an exact H.264 stream in an MP4 at ``path`` (+faststart) and describe the result."""
    encoder = ExactH264Encoder(width, height, fps)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    # faststart moves the index before the media data in a second pass, so a browser can start playing
    # before the whole file has arrived.
    with (
        removed_on_failure(path),
        av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container,
    ):
        stream = container.add_mux_stream("h264", rate=fps, width=width, height=height)
        stream.time_base = Fraction(1, fps)
        for update in updates:
            packet = av.Packet(encoder.encode(update.frame, update.damage))
            packet.stream = stream
            packet.pts = packet.dts = count
            packet.duration = 1
            packet.time_base = Fraction(1, fps)
            packet.is_keyframe = count == 0
            container.mux(packet)
            count += 1
    return written(path, count, fps=fps, width=width, height=height)
