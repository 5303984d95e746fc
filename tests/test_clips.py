"""Clip plan, scene cuts and cross-fade: every frame once, in order, never across a cut."""

from dataclasses import dataclass

import numpy as np
import pytest

from vsrup.clips import CrossFade, cut_score, last_restart, plan


@dataclass(frozen=True)
class F:
    index: int
    image: np.ndarray


def scene(seed: int, h: int, w: int) -> np.ndarray:
    """A smooth texture with its own colour cast, like one shot of a video."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((h // 4 + 1, w // 4 + 1, 3), dtype=np.float32)
    smooth = np.repeat(np.repeat(coarse, 4, axis=0), 4, axis=1)[:h, :w]  # (h, w, 3)
    tint = np.roll(np.array([0.05, 0.5, 0.95], np.float32), seed)  # each shot its own dominant colour
    return 0.4 * smooth + 0.6 * tint


def sequence(n: int, cuts=(), h: int = 24, w: int = 32) -> list[F]:
    """n frames of a one-pixel-per-frame pan; a new shot from each cut on."""
    frames, shot = [], 0
    base = scene(0, h, w + n)
    for i in range(n):
        if i in cuts:
            shot += 1
            base = scene(100 + shot, h, w + n)
        frames.append(F(i, np.ascontiguousarray(base[:, i : i + w])))
    return frames


@pytest.mark.parametrize("n,clip_len,overlap,cuts", [(1, 8, 2, ()), (8, 8, 2, ()), (9, 8, 2, ()), (20, 8, 2, ()), (20, 6, 2, (7,)), (30, 5, 0, (3, 4, 17)), (13, 4, 3, (6,)), (10, 1, 0, ())])
def test_plan_covers_every_frame_and_never_crosses_a_cut(n, clip_len, overlap, cuts):
    clips = list(plan(sequence(n, cuts), clip_len, overlap, scene_threshold=0.3))
    covered = sorted({i for c in clips for i in c.indices})
    assert covered == list(range(n))
    boundaries = set(cuts)
    for prev, clip in zip(clips, clips[1:]):
        assert clip.indices == list(range(clip.start, clip.stop))
        assert 1 <= len(clip.indices) <= clip_len
        assert not any(b in boundaries for b in range(clip.start + 1, clip.stop)), "a clip crosses a cut"
        if clip.start in boundaries:
            assert prev.stop == clip.start  # segments never overlap
        else:
            assert prev.stop - clip.start == overlap  # neighbours share exactly `overlap` frames
        assert clip.stop > prev.stop  # every clip brings new frames


def test_scene_cut_detected_and_threshold_zero_disables():
    frames = sequence(12, cuts=(5,))
    assert cut_score(frames[4].image, frames[5].image) > 0.3 > cut_score(frames[3].image, frames[4].image)
    with_cuts = [c.indices for c in plan(frames, 8, 2, scene_threshold=0.3)]
    assert with_cuts == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10, 11]]
    without = [c.indices for c in plan(frames, 8, 2, scene_threshold=0)]
    assert without == [list(range(8)), list(range(6, 12))]


def test_size_change_starts_a_new_segment():
    frames = [F(i, np.zeros((8, 8, 3), np.float32)) for i in range(4)] + [F(i, np.zeros((8, 10, 3), np.float32)) for i in range(4, 7)]
    assert [c.indices for c in plan(frames, 8, 2, scene_threshold=0)] == [[0, 1, 2, 3], [4, 5, 6]]


def test_cross_fade_is_linear_over_the_overlap_and_hands_out_each_frame_once():
    frames = sequence(10)
    fade = CrossFade(overlap=3)
    out = []
    for k, clip in enumerate(plan(frames, 6, 3, scene_threshold=0)):
        value = float(k)  # clip k outputs the constant k
        out += fade.push(clip, np.full((len(clip.indices), 1, 1, 1), value, np.float32))
    out += fade.flush()
    assert [i for i, _ in out] == list(range(10))
    values = [float(v.ravel()[0]) for _, v in out]
    # clips [0,6) [3,9) [6,10): frames 3,4,5 fade 0->1 and 6,7,8 fade 1->2 with weights 1/4, 2/4, 3/4
    assert values == pytest.approx([0, 0, 0, 0.25, 0.5, 0.75, 1.25, 1.5, 1.75, 2.0])


def test_cross_fade_of_equal_outputs_is_exact():
    frames = sequence(11, cuts=(6,))
    fade = CrossFade(overlap=2)
    out = []
    for clip in plan(frames, 4, 2, scene_threshold=0.3):
        out += fade.push(clip, clip.images())
    out += fade.flush()
    assert [i for i, _ in out] == list(range(11))
    for (i, image), frame in zip(out, frames):
        np.testing.assert_allclose(image, frame.image, atol=1e-6)


def test_last_restart_is_the_shot_start_at_or_before_a_frame():
    frames = sequence(20, cuts=(5, 12))
    assert [last_restart(frames, k, None, 0.3) for k in (0, 4, 5, 11, 12, 19)] == [0, 0, 5, 5, 12, 12]
    assert last_restart(frames, 11, 4, 0.3) == 9  # every 4 frames of the shot from 5: 5, 9
