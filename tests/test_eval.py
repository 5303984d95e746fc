"""vsrup eval: the measures against their formulas and scikit-image, and the command through the real CLI.

Synthetic videos with known motion: a smooth random texture panned right by 4 output pixels (one
input pixel) per frame; the input is its exact x4 area-downscale. Files are lossless RGB H.264
(libx264rgb, qp 0), so what vsrup decodes is what was written.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vsrup import evaluate as ev
from vsrup.flow import Flow

SCALE = 4
DELTA = 0.05  # brightness added to even frames and taken from odd ones in the flickering sequence


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) float32 in [0.15, 0.85]: smooth random colours (blurred noise), no clipping under +-DELTA."""
    rng = np.random.default_rng(seed)
    noise = torch.from_numpy(rng.random((1, 3, h // 4 + 3, w // 4 + 3), dtype=np.float32))  # (1, 3, h', w')
    smooth = F.interpolate(noise, scale_factor=4, mode="bicubic", align_corners=False)[0, :, :h, :w]  # (3, h, w)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (0.15 + 0.7 * smooth).permute(1, 2, 0).numpy()  # (h, w, 3)


def pan(frames: int, h: int, w: int, step: int, seed: int = 0) -> np.ndarray:
    """(T, h, w, 3): frame t+1 is frame t moved right by ``step`` px: O_{t+1}(x) = O_t(x - step)."""
    z = texture(h, w + step * frames, seed)
    return np.stack([z[:, step * (frames - t) : step * (frames - t) + w] for t in range(frames)])


def flickered(frames: np.ndarray) -> np.ndarray:
    """Alternating brightness: + DELTA on even frames, - DELTA on odd ones."""
    signs = np.where(np.arange(len(frames)) % 2 == 0, 1.0, -1.0).astype(np.float32)
    return frames + DELTA * signs[:, None, None, None]  # (T, h, w, 3)


def downscale(frames: np.ndarray, factor: int = SCALE) -> np.ndarray:
    """(T, H, W, 3) -> (T, H/f, W/f, 3), the mean of each f x f block."""
    t, h, w, c = frames.shape
    return frames.reshape(t, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def write(path: Path, frames: np.ndarray, rate: Fraction = Fraction(25), pts: list[int] | None = None, time_base: Fraction | None = None) -> Path:
    """Lossless RGB video of (T, h, w, 3) float frames in [0, 1]; frame i at pts[i] (default i) of time_base (default 1/rate)."""
    time_base = time_base or 1 / rate
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264rgb", rate=rate, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        stream.codec_context.time_base = time_base
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = (pts[i] if pts else i), time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def decoded(path: Path) -> np.ndarray:
    from vsrup.media.decode import decode_frames
    from vsrup.media.probe import probe

    return np.stack([f.image for f in decode_frames(probe(path))])  # (T, H, W, 3)


def exact_pair(h: int, w: int, dx: float, occluded: tuple[slice, slice] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A constant input-grid flow dx (1, 2, h, w) and an occlusion mask (1, 1, h, w) with one block set."""
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0] = dx
    occ = torch.zeros(1, 1, h, w)
    if occluded is not None:
        occ[0, 0][occluded] = 1.0
    return flow, occ


# ---------------------------------------------------------------- the measures, with exact flows


def test_warping_error_of_a_perfect_pan_is_zero_and_of_a_flicker_is_twelve_delta_squared():
    out = pan(4, 48, 64, step=2 * 1)  # x2 output of a 1 px/frame input pan
    flow, occ = exact_pair(24, 32, 1.0)
    f, visible = ev.output_grid(flow, occ, 2)  # (1, 2, 48, 64), (1, 1, 48, 64)
    assert torch.equal(f[:, 0], torch.full((1, 48, 64), 2.0))
    assert float(visible[..., -2:].sum()) == 0  # the last 2 columns leave the frame
    perfect = [ev.warping_error(ev.to_tensor(a), ev.to_tensor(b), f, visible) for a, b in zip(out[:-1], out[1:])]
    assert max(perfect) < 1e-10
    flicker = flickered(out)
    errors = [ev.warping_error(ev.to_tensor(a), ev.to_tensor(b), f, visible) for a, b in zip(flicker[:-1], flicker[1:])]
    # O_t - W(O_{t+1}) = +-2 DELTA on every channel of every counted pixel: ||.||^2 = 3 (2 DELTA)^2
    assert errors == pytest.approx([3 * (2 * DELTA) ** 2] * 3, rel=1e-5)


def test_occluded_pixels_do_not_count():
    out = pan(2, 48, 64, step=2)
    flow, occ = exact_pair(24, 32, 1.0, occluded=(slice(4, 12), slice(8, 16)))  # input px -> output px 8:24, 16:32
    f, visible = ev.output_grid(flow, occ, 2)
    assert float(visible[0, 0, 8:24, 16:32].sum()) == 0 and float(visible[0, 0, 6:8, 16:32].min()) == 1
    damaged = out[1].copy()
    damaged[8:24, 18:34] = 1.0  # what frame 0's occluded block reads in frame 1 (moved 2 px right)
    a, b = ev.to_tensor(out[0]), ev.to_tensor(damaged)
    assert ev.warping_error(a, b, f, visible) < 1e-10
    assert ev.warping_error(a, b, f, torch.ones_like(visible)) > 1e-3  # unmasked, the damage shows
    d_next = torch.zeros(1, 3, 48, 64)
    d_next[..., 8:24, 18:34] = 0.5  # a departure change only where frame 0's occluded block reads
    assert ev.flicker(torch.zeros(1, 3, 48, 64), d_next, f, visible) == 0.0
    assert ev.flicker(torch.zeros(1, 3, 48, 64), d_next, f, torch.ones_like(visible)) > 0.01


def test_a_pair_with_nothing_visible_has_no_value():
    out = ev.to_tensor(pan(1, 16, 16, 1)[0])
    assert ev.warping_error(out, out, torch.zeros(1, 2, 16, 16), torch.zeros(1, 1, 16, 16)) is None


def test_flicker_is_zero_for_an_exact_output_and_two_delta_for_alternating_brightness():
    lowres = pan(4, 24, 32, step=1)
    flow, occ = exact_pair(24, 32, 1.0)
    f, visible = ev.output_grid(flow, occ, 1)
    # x1: the output is the input (D = 0), or the input with alternating brightness (D_t = +-DELTA exactly:
    # the low-pass keeps constants, the warp of a constant is that constant).
    for out, expected in ((lowres, 0.0), (flickered(lowres), 2 * DELTA)):
        d = [ev.departure(ev.to_tensor(o), ev.to_tensor(i)) for o, i in zip(out, lowres)]
        values = [ev.flicker(a, b, f, visible) for a, b in zip(d[:-1], d[1:])]
        assert values == pytest.approx([expected] * 3, abs=1e-6)


def test_flicker_separates_a_perfect_x4_pan_from_a_flickering_one():
    hr = pan(4, 96, 128, step=SCALE)
    lowres = downscale(hr)
    flow, occ = exact_pair(24, 32, 1.0)
    f, visible = ev.output_grid(flow, occ, SCALE)

    def values(out):
        d = [ev.departure(ev.to_tensor(o), ev.to_tensor(i)) for o, i in zip(out, lowres)]
        return np.array([ev.flicker(a, b, f, visible) for a, b in zip(d[:-1], d[1:])])

    perfect, flicker = values(hr), values(flickered(hr))
    assert perfect.max() < 0.05 * 2 * DELTA  # only the borders of the blur and the bicubic reach in
    # |mean|a + c| - |c|| <= mean|a| for the constant c = 2 DELTA: the flicker is 2 DELTA up to the perfect run's value
    assert np.all(np.abs(flicker - 2 * DELTA) <= perfect + 1e-6)


def test_psnr_and_ssim_equal_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    for h, w in ((48, 64), (37, 90), (11, 11)):
        g = texture(h, w, seed=h)
        o = np.clip(g + rng.normal(0, 0.05, g.shape), 0, 1).astype(np.float32)
        mine = ev.psnr(ev.to_tensor(o), ev.to_tensor(g)), ev.ssim(ev.to_tensor(o), ev.to_tensor(g))
        psnr = metrics.peak_signal_noise_ratio(g, o, data_range=1.0)
        ssim = metrics.structural_similarity(g, o, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False)
        assert abs(mine[0] - psnr) < 1e-3 and abs(mine[1] - ssim) < 1e-3, (h, w, mine, psnr, ssim)
        assert mine[1] < 0.99  # the noise shows


def test_identical_frames_have_infinite_psnr_and_ssim_one():
    g = ev.to_tensor(texture(16, 16))
    assert ev.psnr(g, g) is None
    assert ev.ssim(g, g) == pytest.approx(1.0, abs=1e-12)
    assert ev.ssim(g[..., :10, :], g[..., :10, :]) is None  # under the 11-tap window


def test_tof_is_the_mean_end_point_distance():
    a = torch.zeros(1, 2, 4, 4)
    b = torch.zeros(1, 2, 4, 4)
    b[:, 0], b[:, 1] = 3.0, 4.0
    assert ev.flow_distance(a, b) == pytest.approx(5.0)


# ---------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """The input pan, a perfect x4 output, a flickering one, and the first 8 frames of the perfect one."""
    d = tmp_path_factory.mktemp("eval")
    hr = pan(10, 96, 128, step=SCALE)
    return {
        "input": write(d / "in.mp4", downscale(hr)),
        "perfect": write(d / "perfect.mp4", hr),
        "flicker": write(d / "flicker.mkv", flickered(hr)),
        "short": write(d / "short.mp4", hr[:8]),
        "short_mkv": write(d / "short.mkv", hr[:8]),
        "slow": write(d / "slow.mp4", hr, rate=Fraction(20)),
    }


def eval_json(run_vsrup, *args) -> dict:
    code, err = run_vsrup("eval", *args, "--json")
    assert code == 0, err
    return json.loads(run_vsrup.stdout)


def test_eval_json_on_known_motion(run_vsrup, videos):
    doc = eval_json(run_vsrup, videos["perfect"], videos["flicker"], "--input", videos["input"])
    assert doc["schema"] == "vsrup-eval/1" and doc["frames"] == 10 and doc["scale"] == SCALE
    assert doc["input_size"] == [32, 24] and doc["output_size"] == [128, 96] and doc["reference"] is None
    assert doc["times"] == pytest.approx([i / 25 for i in range(10)]) and doc["cuts"] == []
    assert len(doc["visible"]) == 9 and min(doc["visible"]) > 0.8  # DIS's flow: most pixels visible both ways
    perfect, flicker = doc["outputs"]
    assert set(perfect) == {"path", "summary", "pairs"} and set(perfect["summary"]) == {"warping_error", "flicker"}
    assert len(perfect["pairs"]["warping_error"]) == 9
    expected = 3 * (2 * DELTA) ** 2  # the formula, as with exact flows above
    assert perfect["summary"]["warping_error"] < 0.02 * expected  # estimated flow, 8-bit frames: ~0
    assert flicker["summary"]["warping_error"] == pytest.approx(expected, rel=0.05)
    assert perfect["summary"]["flicker"] < 0.05 * 2 * DELTA
    assert flicker["summary"]["flicker"] == pytest.approx(2 * DELTA, rel=0.05)


def test_eval_with_reference_matches_scikit_image(run_vsrup, videos):
    metrics = pytest.importorskip("skimage.metrics")
    doc = eval_json(run_vsrup, videos["flicker"], "--input", videos["input"], "--reference", videos["perfect"])
    out = doc["outputs"][0]
    assert set(out["summary"]) == {"warping_error", "flicker", "psnr", "ssim", "tof"}
    o, g = decoded(videos["flicker"]), decoded(videos["perfect"])
    psnr = [metrics.peak_signal_noise_ratio(b, a, data_range=1.0) for a, b in zip(o, g)]
    ssim = [metrics.structural_similarity(b, a, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False) for a, b in zip(o, g)]
    assert np.abs(np.array(out["frames"]["psnr"]) - psnr).max() < 1e-3
    assert np.abs(np.array(out["frames"]["ssim"]) - ssim).max() < 1e-3
    assert out["summary"]["psnr"] == pytest.approx(np.mean(psnr), abs=1e-3)
    assert len(out["pairs"]["tof"]) == 9 and out["summary"]["tof"] >= 0
    same = eval_json(run_vsrup, videos["perfect"], "--input", videos["input"], "--reference", videos["perfect"])["outputs"][0]
    assert same["frames"]["psnr"] == [None] * 10 and same["summary"]["psnr"] is None  # identical: infinite
    assert same["summary"]["ssim"] == pytest.approx(1.0) and same["summary"]["tof"] == pytest.approx(0.0)


def test_eval_table_plot_and_slice(run_vsrup, videos, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    plot, profile = tmp_path / "p.png", tmp_path / "s.png"
    code, err = run_vsrup("eval", videos["flicker"], "-i", videos["input"], "--reference", videos["perfect"],
                          "--plot", plot, "--slice", "x=60", "--slice-out", profile)
    assert code == 0, err
    lines = run_vsrup.stdout.splitlines()
    assert "10 frames, 32x24 -> 128x96 (x4)" in lines[0] and lines[1].split() == ["output", "E_warp", "flicker", "PSNR", "dB", "SSIM", "tOF", "px"]
    assert len(lines) == 3 and lines[2].split()[0] == str(videos["flicker"])
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size[0] > 300
    with Image.open(profile) as image:
        assert image.format == "PNG" and image.size == (2 * 10 + 4, 96)  # the reference, a 4 px gap, the output
        pixels = np.asarray(image.convert("RGB")).astype(np.float32) / 255  # (96, 24, 3)
    for picture, video in ((pixels[:, :10], "perfect"), (pixels[:, 14:], "flicker")):
        column = decoded(videos[video])[:, :, 60].transpose(1, 0, 2)  # (96, 10, 3) column 60 of frame t in column t
        assert np.abs(picture - column).max() <= 0.5 / 255 + 1e-6
    assert np.all(pixels[:, 10:14] == 1.0)  # the gap is white
    code, err = run_vsrup("eval", videos["perfect"], "-i", videos["input"], "--plot", plot)
    assert code == 2 and "exists; pass --overwrite" in err


@pytest.mark.parametrize("other", ["short", "short_mkv"])
def test_a_frame_count_mismatch_is_one_line_and_exit_65(run_vsrup, videos, other):
    """mp4 states its frame count (refused before any work); Matroska does not (found when the output ends)."""
    code, err = run_vsrup("eval", videos[other], "--input", videos["input"])
    assert code == 65
    assert err.count("\n") == 1 and err.startswith("vsrup: error: ") and "8 frames" in err and "10" in err, err


def test_timestamps_and_sizes_must_match(run_vsrup, videos, tmp_path):
    code, err = run_vsrup("eval", videos["slow"], "--input", videos["input"])
    assert code == 65 and err.count("\n") == 1 and "frame 1 is at 0.0500 s" in err and "0.0400 s" in err, err
    odd = write(tmp_path / "odd.mp4", pan(10, 90, 128, step=SCALE))
    code, err = run_vsrup("eval", odd, "--input", videos["input"])
    assert code == 65 and err.count("\n") == 1 and "not a whole multiple" in err, err
    code, err = run_vsrup("eval", videos["perfect"], "--input", videos["input"], "--reference", odd)
    assert code == 65 and err.count("\n") == 1 and "must be the same size" in err, err
    code, err = run_vsrup("eval", tmp_path / "missing.mp4", "--input", videos["input"])
    assert code == 65 and err.count("\n") == 1 and "no such file" in err


def test_a_constant_timeline_shift_is_allowed(run_vsrup, videos, tmp_path):
    shifted = write(tmp_path / "late.mp4", decoded(videos["perfect"]), pts=[i + 3 for i in range(10)])
    doc = eval_json(run_vsrup, shifted, "--input", videos["input"])
    assert doc["outputs"][0]["summary"]["warping_error"] < 1e-3


def test_times_rounded_to_a_coarser_time_base_still_match(run_vsrup, tmp_path):
    """29.97 fps at 1/30000 in, Matroska's 1 ms ticks out: every output time is off by up to half a tick."""
    hr = pan(8, 48, 64, step=SCALE)
    ntsc = Fraction(30000, 1001)
    source = write(tmp_path / "in.mp4", downscale(hr), rate=ntsc, pts=[1001 * i for i in range(8)], time_base=Fraction(1, 30000))
    output = write(tmp_path / "out.mkv", hr, rate=ntsc, pts=[1001 * i for i in range(8)], time_base=Fraction(1, 30000))
    with av.open(str(output)) as c:
        assert c.streams.video[0].time_base == Fraction(1, 1000)  # the muxer rounded every time to the ms
    assert eval_json(run_vsrup, output, "--input", source)["frames"] == 8
    late = write(tmp_path / "late.mkv", hr, rate=ntsc, pts=[1001 * i + (60 if i == 5 else 0) for i in range(8)], time_base=Fraction(1, 30000))
    code, err = run_vsrup("eval", late, "--input", source)  # frame 5 2 ms late: beyond what rounding to the ms can explain
    assert code == 65 and "frame 5 is at" in err, err


def test_usage_errors(run_vsrup, videos, tmp_path, monkeypatch):
    args = (videos["perfect"], "--input", videos["input"])
    for extra, words in ((("--slice", "x=3"), "--slice and --slice-out go together"),
                         (("--slice", "z=3", "--slice-out", tmp_path / "s.png"), "expected x=N or y=N"),
                         (("--slice", "x=128", "--slice-out", tmp_path / "s.png"), "outside the 128x96 output"),
                         (("--scene-threshold", "nan"), "outside 0.0..1.0"),
                         (("--flow", "farneback"), "'farneback' is not one of 'dis', 'raft'"),
                         (("--plot", videos["perfect"], "--overwrite"), "is one of the videos measured")):
        code, err = run_vsrup("eval", *args, *extra)
        assert code == 2 and err.count("\n") == 1 and words in err, (extra, err)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    code, err = run_vsrup("eval", *args, "--plot", tmp_path / "p.png")
    assert code == 2 and "pip install 'vsrup[plot]'" in err and not (tmp_path / "p.png").exists()


def test_scene_cuts_are_left_out(videos, tmp_path):
    a, b = pan(5, 96, 128, SCALE, seed=1), pan(5, 96, 128, SCALE, seed=2)
    hr = np.concatenate([a, 0.3 * b])  # another shot after frame 4: new layout, darker colours (cut score 0.35)
    result = ev.evaluate([write(tmp_path / "o.mp4", hr)], write(tmp_path / "i.mp4", downscale(hr)))
    assert result.cuts == [4] and result.runs[0].warping_error[4] is None and result.visible[4] == 0.0
    assert all(v is not None for k, v in enumerate(result.runs[0].warping_error) if k != 4)


def test_help_states_the_formulas(run_vsrup):
    code, _ = run_vsrup("eval", "--help")
    assert code == 0
    text = run_vsrup.stdout
    for formula in ("E_t = sum_p M_t ||O_t - W(O_t+1, f_t)||^2 / sum_p M_t", "D_t = L(O_t - bicubic(I_t))",
                    "||flow(O_t, O_t+1) - flow(G_t, G_t+1)||", "sigma 1.5 (11 taps)", "else exit 65"):
        assert formula in text, formula


def test_figures_script_draws_the_crossfade_and_skips_missing_media(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    import importlib.util

    from PIL import Image

    script = Path(__file__).resolve().parents[1] / "docs" / "figures" / "make_figures.py"
    spec = importlib.util.spec_from_file_location("make_figures", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--only", "crossfade", "tiles", "--out", str(tmp_path), "--media", str(tmp_path / "nothing")])
    printed = capsys.readouterr().out
    assert "skip tiles:" in printed and not (tmp_path / "tiles.png").exists()
    with Image.open(tmp_path / "crossfade.png") as image:
        assert image.format == "PNG"


def test_an_output_of_upscale_frames_is_measured_with_the_same_frames(run_vsrup, videos, tmp_path):
    part = tmp_path / "part.mkv"
    code, err = run_vsrup("upscale", videos["input"], part, "--model", "lanczos", "--frames", "3:7", "--quiet")
    assert code == 0, err
    code, err = run_vsrup("eval", part, "--input", videos["input"])
    assert code == 65 and err.count("\n") == 1 and "4 frames but" in err and "has 10" in err, err
    doc = eval_json(run_vsrup, part, "--input", videos["input"], "--frames", "3:7")
    assert doc["frames"] == 4 and doc["first_frame"] == 3 and doc["times"] == pytest.approx([i / 25 for i in range(3, 7)])
    assert len(doc["outputs"][0]["pairs"]["warping_error"]) == 3
    code, err = run_vsrup("eval", part, "--input", videos["input"], "--frames", "3:8")
    assert code == 65 and "4 frames but" in err and "in.mp4 (--frames 3:8) has 5" in err, err
    code, err = run_vsrup("eval", part, "--input", videos["input"], "--frames", "20:")
    assert code == 2 and "--frames starts at 20" in err and "has 10 frames" in err, err


def test_matplotlib_is_imported_only_for_plot(videos):
    import subprocess
    import sys

    code = ("import sys\nfrom vsrup.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "sys.exit('matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, "eval", str(videos["perfect"]), "--input", str(videos["input"])],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "E_warp" in done.stdout


def test_a_row_slice_stacks_frames_top_to_bottom():
    from vsrup.plots import GAP, slice_image

    rows = [[np.full((5, 3), t / 10, np.float32) for t in range(4)], [np.zeros((5, 3), np.float32)] * 4]  # two videos, 4 frames of W = 5
    image = slice_image(rows, "y")
    assert image.shape == (2 * 4 + GAP, 5, 3)
    assert [int(image[t, 0, 0]) for t in range(4)] == [0, 26, 51, 77]  # frame t is row t: round(255 t / 10)
    assert np.all(image[4 : 4 + GAP] == 255) and np.all(image[4 + GAP :] == 0)
