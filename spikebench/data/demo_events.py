"""The demo's simulated event camera: MNIST digits "recorded" as N-MNIST events, deterministic for a seed.

A 34x34 sensor watches the digit move through N-MNIST's three saccades (offsets and timing measured from
the real recordings); each pixel fires an event when its log intensity changes by more than its
threshold since its last event, with per-pixel threshold mismatch, timestamp jitter and uniform background
activity. :func:`encode_nmnist` writes the events in N-MNIST's binary format (5 bytes per event), which
tonic's reader and :mod:`spikebench.data.nmnist` read unchanged. ``spikebench.data.demo`` writes the files.
"""

from __future__ import annotations

import numpy as np

from spikebench.data.catalog import MNIST_IMAGE_SHAPE, NMNIST_HEIGHT, NMNIST_WIDTH

#: Sensor width/height (ATIS crop used by N-MNIST).
NMNIST_SENSOR = NMNIST_WIDTH
assert NMNIST_HEIGHT == NMNIST_WIDTH  # the simulation assumes a square sensor
#: Digit offsets (x, y) in the 34x34 field at the three corners of the saccade triangle, in pixels.
#: Measured from the real recordings by matching each 10 ms slice to its MNIST digit.
SACCADE_CORNERS = np.array([[0.5, 0.5], [1.5, 5.5], [5.5, 1.0]], dtype=np.float32)
#: Start and end (ms) of the three saccades' motion, read off the real recordings' mean event rate
#: (activity 5-85, 100-190, 225-300 ms, with quiet pauses between).
SACCADE_WINDOWS_MS = np.array([[2.0, 85.0], [95.0, 190.0], [222.0, 300.0]])
RECORDING_MS = 310.0  # length of a recording (the real ones span ~290-314 ms)
SIM_STEP_MS = 2.0  # simulation time step (event times are interpolated inside a step)
CONTRAST_THRESHOLD = 0.55  # log-intensity change that fires an event (mean over pixels)
THRESHOLD_MISMATCH = 0.10  # relative per-pixel spread of the threshold
BACKGROUND_LEVEL = 0.04  # intensity of the (black) MNIST background relative to full white
NOISE_HZ_PER_PIXEL = 0.3  # background activity (uniform, both polarities)
JITTER_US = 150.0  # timestamp jitter (std)
_CHUNK = 64  # recordings simulated at once


def _interp_matrix(offset: np.ndarray, out_size: int, in_size: int) -> np.ndarray:
    """Bilinear resampling matrices [..., out_size, in_size] that shift an axis by ``offset`` pixels."""
    out_pos = np.arange(out_size, dtype=np.float32)[:, None]
    in_pos = np.arange(in_size, dtype=np.float32)[None, :]
    return np.maximum(0.0, 1.0 - np.abs(out_pos - offset[..., None, None] - in_pos)).astype(np.float32)


def _saccade_offsets(n: int, n_steps: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Digit offsets x and y, each [n, n_steps], along the three saccades (one step per SIM_STEP_MS)."""
    corners = SACCADE_CORNERS[None] + rng.normal(0.0, 0.25, (n, 3, 2)).astype(np.float32)
    corners = np.clip(corners, 0.0, NMNIST_SENSOR - float(MNIST_IMAGE_SHAPE[1]))
    windows = SACCADE_WINDOWS_MS[None] + rng.normal(0.0, 1.5, (n, 3, 2))  # [n, 3, (start, end)]
    starts, ends = windows[..., 0], windows[..., 1]
    t = np.arange(n_steps, dtype=np.float64)[None, :] * SIM_STEP_MS  # [1, T]
    seg = np.clip((t[:, :, None] >= starts[:, None, 1:]).sum(axis=2), 0, 2)  # [n, T] which saccade
    start, end = np.take_along_axis(starts, seg, 1), np.take_along_axis(ends, seg, 1)
    s = np.clip((t - start) / (end - start), 0.0, 1.0)
    s = (1.0 - np.cos(np.pi * s)) / 2.0  # bell-shaped velocity, at rest at the corners
    a = np.take_along_axis(corners, seg[:, :, None].repeat(2, 2), 1)
    b = np.take_along_axis(corners, ((seg + 1) % 3)[:, :, None].repeat(2, 2), 1)
    offsets = a + (b - a) * s[:, :, None].astype(np.float32)
    return offsets[..., 0], offsets[..., 1]


def simulate_nmnist(images: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Simulate N-MNIST recordings of ``images`` (uint8 [N, 28, 28]); one structured event array each.

    An event camera (34x34) watches the digit move through three ~100 ms saccades. Each pixel keeps a
    reference log intensity and fires ON/OFF events whenever its log intensity moves more than its
    contrast threshold away from it (per-pixel thresholds; event times interpolated within a step,
    plus jitter); uniform background activity is added. Fields x, y (uint8), t (us, int64), p (0/1).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != MNIST_IMAGE_SHAPE:
        raise ValueError(f"expected images uint8 [N, 28, 28], got {images.dtype} {images.shape}")
    out: list[np.ndarray] = []
    for lo in range(0, len(images), _CHUNK):
        out.extend(_simulate_chunk(images[lo : lo + _CHUNK], rng))
    return out


EVENT_DTYPE = np.dtype([("x", np.uint8), ("y", np.uint8), ("t", np.int64), ("p", np.uint8)])


def _crossing_events(
    log_i: np.ndarray,
    rec: np.ndarray,
    pix: np.ndarray,
    step: np.ndarray,
    count: np.ndarray,
    sign: np.ndarray,
    ref0: np.ndarray,
    thr: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """One row per event, the k-th level crossing (k = 1..count) within its step: (recording, pixel, sign,
    time in ms), the time interpolated linearly within the step (draws no random numbers)."""
    rows = np.repeat(np.arange(len(count)), count)
    k = np.arange(len(rows)) - np.repeat(np.cumsum(count) - count, count) + 1
    rec, pix, step, sign = rec[rows], pix[rows], step[rows], sign[rows]
    level = ref0[rows] + sign * k * thr[rows]
    before = log_i[rec, step - 1, pix]
    change = log_i[rec, step, pix] - before
    safe = np.where(change != 0, change, 1.0)
    frac = np.clip(np.where(change != 0, (level - before) / safe, 1.0), 0.0, 1.0)
    return rec, pix, sign, (step - 1 + frac) * SIM_STEP_MS


def _simulate_chunk(images: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    n = len(images)
    size = NMNIST_SENSOR
    n_pix = size * size
    n_steps = int(np.ceil(RECORDING_MS / SIM_STEP_MS)) + 1
    ox, oy = _saccade_offsets(n, n_steps, rng)
    digit = images.astype(np.float32)[:, None] / 255.0  # [n, 1, 28, 28] (checked by simulate_nmnist)
    digit_rows, digit_cols = images.shape[1:]
    frames = _interp_matrix(oy, size, digit_rows) @ digit @ np.swapaxes(_interp_matrix(ox, size, digit_cols), -1, -2)
    log_i = np.log(BACKGROUND_LEVEL + (1.0 - BACKGROUND_LEVEL) * frames).reshape(n, n_steps, n_pix)
    threshold = (CONTRAST_THRESHOLD * (1.0 + THRESHOLD_MISMATCH * rng.standard_normal((n, n_pix)))).astype(np.float32)
    threshold = np.maximum(threshold, 0.5 * CONTRAST_THRESHOLD)
    ref = log_i[:, 0] + (rng.uniform(-0.5, 0.5, (n, n_pix)) * threshold).astype(np.float32)

    crossings = []  # per step: (recording, pixel, step, count, sign, reference before, threshold)
    for step in range(1, n_steps):  # time loop, vectorised over recordings and pixels
        diff = log_i[:, step] - ref
        rec, pix = np.nonzero(np.abs(diff) >= threshold)
        if len(rec) == 0:
            continue
        d, thr = diff[rec, pix], threshold[rec, pix]
        count = np.floor(np.abs(d) / thr)
        sign = np.sign(d)
        crossings.append((rec, pix, np.full(len(rec), step), count.astype(np.int64), sign, ref[rec, pix], thr))
        ref[rec, pix] += sign * count * thr

    if crossings:
        rec, pix, step, count, sign, ref0, thr = (np.concatenate(column) for column in zip(*crossings))
    else:  # blank digits: background activity only
        rec, pix, step, count = (np.zeros(0, dtype=np.int64) for _ in range(4))
        sign, ref0, thr = (np.zeros(0, dtype=np.float32) for _ in range(3))
    rec, pix, sign, t_ms = _crossing_events(log_i, rec, pix, step, count, sign, ref0, thr)

    # Uniform background activity over the sensor and the recording.
    n_noise = rng.poisson(NOISE_HZ_PER_PIXEL * n_pix * n_steps * SIM_STEP_MS / 1000.0, n)
    noise_rec = np.repeat(np.arange(n), n_noise)
    noise_pix = rng.integers(0, n_pix, len(noise_rec))
    noise_t = rng.uniform(0.0, (n_steps - 1) * SIM_STEP_MS, len(noise_rec))
    noise_sign = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), len(noise_rec))

    rec = np.concatenate([rec, noise_rec])
    pix = np.concatenate([pix, noise_pix])
    t_us = np.concatenate([t_ms, noise_t]) * 1000.0
    t_us += rng.normal(0.0, JITTER_US, len(t_us)) + rng.uniform(200.0, 1500.0, n)[rec]  # recording starts ~1 ms in
    t_us = np.clip(np.rint(t_us), 0, 2**23 - 1).astype(np.int64)
    polarity = (np.concatenate([sign, noise_sign]) > 0).astype(np.uint8)

    order = np.lexsort((t_us, rec))
    events = np.empty(len(order), dtype=EVENT_DTYPE)
    events["x"], events["y"] = pix[order] % size, pix[order] // size
    events["t"], events["p"] = t_us[order], polarity[order]
    return np.split(events, np.cumsum(np.bincount(rec, minlength=n))[:-1])


def encode_nmnist(events: np.ndarray) -> bytes:
    """Encode events (fields x, y, t in us, p) as N-MNIST binary: 5 big-endian bytes per event.

    Bits 39-32 x, 31-24 y, bit 23 polarity (1 = ON), bits 22-0 timestamp (us).
    """
    t = np.asarray(events["t"], dtype=np.int64)
    if len(t) and (t.min() < 0 or t.max() >= 2**23):
        raise ValueError(f"timestamps must be in 0..{2**23 - 1} us, got {t.min()}..{t.max()}")
    raw = np.empty((len(t), 5), dtype=np.uint8)
    raw[:, 0] = events["x"]
    raw[:, 1] = events["y"]
    raw[:, 2] = (np.asarray(events["p"], dtype=np.int64) << 7) | (t >> 16)
    raw[:, 3] = (t >> 8) & 0xFF
    raw[:, 4] = t & 0xFF
    return raw.tobytes()
