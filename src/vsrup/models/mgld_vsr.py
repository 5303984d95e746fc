"""MGLD-VSR (Yang et al., ECCV 2024; Hub ``Iceclear/MGLD-VSR``): motion-guided latent diffusion, a clip model of 5 frames.

Licence: the code and weights are under the S-Lab License 1.0, **non-commercial use only**; loading says so.

The repo holds two PyTorch Lightning pickles (no diffusers layout, no model_index.json): ``mgldvsr_unet.ckpt``
(the UNet with SPADE and a temporal middle block, the struct encoder, the SD 2.1 VAE and the OpenCLIP text tower)
and ``video_vae_cfw.ckpt`` (the video VAE with the temporal CFW decoder). Each is read once by torch's
weights-only unpickler (``models/pickles.py``: nothing in it runs) and cached as safetensors; its tensors are
then renamed onto vsrup's modules (``models/mgld_convert.py``): ``MGLDUNet`` and ``StructEncoder``
(``models/mgld_unet.py``), diffusers' ``AutoencoderKL`` for the SD VAE's encoder, ``CFWAutoencoder``
(``models/mgld_vae.py``), and transformers' ``CLIPTextModel`` with 23 layers (OpenCLIP's penultimate layer),
run once on the empty prompt the model was trained with. Network configs are read off the tensors' shapes with
the published topology; the full-size ones are below as data (the benchmark builds them). The loop is
``vsrup.sampling.mgld``; the differences from the published code are in docs/models/mgld-vsr.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from transformers import CLIPTextConfig, CLIPTextModel

from vsrup.config import SampleConfig, UpscaleConfig
from vsrup.device import vae_dtype
from vsrup.errors import ModelError, UsageError
from vsrup.events import Emit, Event, ignore
from vsrup.memory import Cost, MemoryPlan, stage
from vsrup.models import ModelInfo, Progress, Window, hub, settle_fixed
from vsrup.models.loading import loading, placement, to_device
from vsrup.models.mgld_convert import convert_unet, convert_vae
from vsrup.models.mgld_unet import MGLDUNet, StructEncoder, unet_config
from vsrup.models.mgld_vae import CFWAutoencoder, vae_config
from vsrup.models.pickles import converted
from vsrup.sampling.mgld import SCALE, TILE, TiledEps, ddpm, guidance_hook, latent_flow, latent_size, sample_clip, upsample
from vsrup.sampling.mgld_decode import decode, posterior
from vsrup.sampling.noise import frame_noise, generators
from vsrup.sampling.temporal import guided_steps, step_strength

UNET_CKPT, VAE_CKPT = "mgldvsr_unet.ckpt", "video_vae_cfw.ckpt"
FILES = hub.Layout(what="MGLD-VSR", configs=(UNET_CKPT, VAE_CKPT), folders=(), weights={})  # both pickles, read as weights only
PIPELINE_CLASSES = ()  # the repo has no model_index.json; chosen by its short name or its repo id
LICENCE = "MGLD-VSR's code and weights are under the S-Lab License 1.0: non-commercial use only"

FRAMES = 5  # the temporal layers' training length (num_frames)
LATENT_SCALE = 0.18215
DEC_W = 1.0  # the CFW fusion weight: the video VAE's training value and the README's --dec_w (the script's default is 0.5)
CLIP_WIDTH = 64  # channels per head of the text encoder, the UNet's attention (num_head_channels) and its temporal attention
STRUCT_HEADS = 4  # the struct encoder's attention heads

# The published networks at full size, as data (benchmarks/bench_pipeline.py builds them with random weights).
UNET_CONFIG = unet_config(320, (1, 2, 4, 4), CLIP_WIDTH, 1024)  # 935,321,287 parameters (tests/fixtures/mgld_vsr_unet_keys.txt)
STRUCT_CONFIG = dict(in_channels=4, channels=256, out_channels=256, channel_mult=(1, 1, 2, 2), heads=STRUCT_HEADS)
VAE_CONFIG = vae_config(128, (1, 2, 4, 4))
TEXT_CONFIG = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                   max_position_embeddings=77, hidden_act="gelu", projection_dim=1024)


# The memory plan's constants (memory.Cost, fp32 bytes), from peaks of the full-size networks, random weights, CPU, VmHWM
# above the inputs (benchmarks/bench_mgld_memory.py; docs/benchmarks.md):
#   UNet + struct encoder on one 5-frame tile of 32^2 / 48^2 / 64^2 latent px: 240 / 477 / 888 MiB; with the x4's 96 MiB
#     intercept, 29.5 / 34.7 / 40.5 KB per frame-tile px (the plan counts frame tiles): 41 KB bounds all three
#   a blended decode tile (its crop's CFW features, then decode_clip) of 5 frames of 16^2 / 24^2 / 32^2 latent px:
#     517 / 795 / 1242 MiB; 256 MiB + 1.1 MB per latent px of the tile bounds all three (the slope from 24^2 to 32^2: 1.05 MB)
#   the exact tiled decode of a 5-frame 32 x 64 latent at tile 16: 1040 MiB, 532 KB per latent px of the clip (its states),
#     plus the CFW features it holds (5 x (256 x 16 + 512 x 4) x 4 B = 123 KB per latent px, built before the peak's reset):
#     655 KB, 730 KB with a margin
#   the SD VAE encode pass by pass (mgld_decode.encode_frame) of one upsampled frame of 32^2 / 64^2 latent px at tile n / 4:
#     53 / 326 MiB, 91 KiB per latent px from 32^2 to 64^2 (the CFW features pass by pass: 75 KiB); 96 KiB bounds both.
#     Where they do not fit, the encode runs in blended tiles: one cut (tile + 2 halos) at 160 KiB per px, less than a decode tile.
# The attention term is not measured (too small at these sizes to show): the x4's 8 B per px^2 for each of the 5 frames.
# The plan counts the latent's px (latent_size: the upsampled, padded input / 8).
COST = dict(unet_per_px=41_000, vae_fixed=256 * 2**20, vae_per_px=1_100_000, vae_attention=5 * 8, vae_state_per_px=730_000,
            encode_state_per_px=96 * 2**10, latent=latent_size)


def build_random_networks(device: str | torch.device = "meta", dtype: torch.dtype = torch.float32) -> dict[str, torch.nn.Module]:
    """The full-size networks with random weights (``device="meta"`` allocates nothing): for benchmarks and counts."""
    with torch.device(device):
        return {
            "unet": MGLDUNet(**UNET_CONFIG).to(dtype).eval(), "struct": StructEncoder(**STRUCT_CONFIG).to(dtype).eval(),
            "vae": AutoencoderKL(**VAE_CONFIG).to(vae_dtype(dtype)).eval(), "video": CFWAutoencoder(**VAE_CONFIG).to(vae_dtype(dtype)).eval(),
            "text": CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG)).to(dtype).eval(),
        }


DEFAULTS = dict(
    steps=50,  # the README's --ddpm_steps
    scheduler="ddpm",
    motion_guidance=0.75,  # vsrup's guidance (sampling/guidance.py), per tenth of the schedule, as for sd-x4
    guidance_window=(0.0, 0.9),  # no guidance in the last tenth (the published final kick is 6.5x the one before)
)
REFUSED = {
    "guidance": "it samples without classifier-free guidance",
    "prompt": "it samples with the empty prompt it was trained with",
    "negative_prompt": "it samples without classifier-free guidance",
    "noise_level": "its input is not noise-augmented: it starts from the input latent noised to t = 999",
    "propagation_steps": "its temporal consistency is its temporal layers and motion guidance",
}


def settle(sample: SampleConfig) -> SampleConfig:
    """``sample`` with MGLD-VSR's defaults; a UsageError for an option it cannot honour."""
    sample = settle_fixed(sample, "mgld-vsr", REFUSED, DEFAULTS)
    if sample.steps < 2:
        raise UsageError(f"--model mgld-vsr needs at least 2 steps (a respaced DDPM schedule from t = 999 to 0), got {sample.steps}")
    return sample


def configs_from(parts: dict[str, dict[str, torch.Tensor]], video: dict[str, torch.Tensor]) -> dict[str, dict]:
    """The networks' configs from the converted tensors' shapes, with the published topology."""
    unet, struct, vae, text = parts["unet"], parts["struct"], parts["vae"], parts["text"]
    width = unet["conv_in.weight"].shape[0]
    mult = tuple(unet[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0] // width for i in range(4))
    cross = unet["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape[1]
    struct_width = struct["conv_in.weight"].shape[0]
    tokens, hidden = text["embeddings.token_embedding.weight"].shape
    return {
        "unet": {**unet_config(width, mult, CLIP_WIDTH, cross), "struct_channels": unet["down_blocks.0.resnets.0.spade.mlp_shared.0.weight"].shape[1]},
        "struct": dict(in_channels=struct["conv_in.weight"].shape[1], channels=struct_width, out_channels=struct["fea_tran.0.conv2.weight"].shape[0],
                       channel_mult=tuple(struct[f"levels.{i}.resnets.0.conv1.weight"].shape[0] // struct_width for i in range(4)), heads=STRUCT_HEADS),
        "vae": vae_shape(vae),
        "video": vae_shape(video),
        "text": dict(TEXT_CONFIG, vocab_size=tokens, hidden_size=hidden, intermediate_size=text["encoder.layers.0.mlp.fc1.weight"].shape[0],
                     num_hidden_layers=sum(1 for k in text if k.endswith("mlp.fc1.weight")), num_attention_heads=max(1, hidden // CLIP_WIDTH),
                     max_position_embeddings=text["embeddings.position_embedding.weight"].shape[0], projection_dim=hidden),
    }


def vae_shape(state: dict[str, torch.Tensor]) -> dict:
    width = state["encoder.conv_in.weight"].shape[0]
    return vae_config(width, tuple(state[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0] // width for i in range(4)))


def build(cls, config: dict, state: dict[str, torch.Tensor], what: str, partial: tuple[str, ...] = ()) -> torch.nn.Module:
    """``cls(**config)`` holding ``state`` exactly; ``partial``: prefixes of the network that the state leaves out on purpose."""
    network = cls(CLIPTextConfig(**config)) if cls is CLIPTextModel else cls(**config)
    result = network.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(partial)]
    if missing or result.unexpected_keys:
        first = (missing or result.unexpected_keys)[0]
        raise ModelError(f"the MGLD-VSR checkpoint does not fit its {what}: {'missing' if missing else 'unexpected'} {first}")
    return network


def empty_prompt_ids(vocab: int, length: int) -> torch.Tensor:
    """OpenCLIP's tokens of '': start, end, then zero padding (its start and end are the vocabulary's last two)."""
    ids = torch.zeros(1, length, dtype=torch.long)
    ids[0, :2] = torch.tensor([vocab - 2, vocab - 1])
    return ids  # (1, 77)


class Model:
    """MGLD-VSR as a clip model: windows of 5 frames, (T, h, w, 3) in [0, 1] -> (T, 4h, 4w, 3)."""

    def __init__(self, source: str, config: UpscaleConfig, emit: Emit = ignore):
        self.settings = s = settle(config.sample)
        emit(Event("warning", message=LICENCE))
        self.device, self.dtype, folder = placement(source, FILES, config, emit)
        self.vae_dtype = vae_dtype(self.dtype)
        with loading(source, folder):
            parts = convert_unet(read(Path(folder) / UNET_CKPT, emit), STRUCT_HEADS)
            video = convert_vae(read(Path(folder) / VAE_CKPT, emit))
            configs = configs_from(parts, video)
            text = build(CLIPTextModel, configs["text"], parts["text"], "text encoder").eval()
            with torch.no_grad():
                ids = empty_prompt_ids(configs["text"]["vocab_size"], configs["text"]["max_position_embeddings"])
                self.text = text(ids).last_hidden_state.to(self.device, self.dtype)  # (1, 77, 1024)
            del text
            self.unet = on(build(MGLDUNet, configs["unet"], parts["unet"], "UNet").to(self.dtype), self.device)
            self.struct = to_device(build(StructEncoder, configs["struct"], parts["struct"], "struct encoder").to(self.dtype), self.device)
            encoder = build(AutoencoderKL, configs["vae"], parts["vae"], "VAE", partial=("decoder.", "post_quant_conv."))
            self.encoder = to_device(encoder.to(self.vae_dtype), self.device)
            self.video = on(build(CFWAutoencoder, configs["video"], video, "video VAE").to(self.vae_dtype), self.device)
        guided = bool(guided_steps(s))
        cost = Cost(dtype_bytes=torch.finfo(self.dtype).bits // 8, vae_dtype_bytes=torch.finfo(self.vae_dtype).bits // 8, **COST)
        self.info = ModelInfo(name="mgld-vsr", scale=SCALE, kind="clip", flow=guided, generative=True, cost=cost,
                              device=str(self.device), window=FRAMES)

    def sample(self, window: Window, plan: MemoryPlan | None, progress: Progress) -> torch.Tensor:
        """(T, h, w, 3) float32 in [0, 1] -> (T, 4h, 4w, 3) float32, nominally [0, 1]."""
        s = self.settings
        frames, h, w, _ = window.frames.shape
        rgb = torch.from_numpy(np.ascontiguousarray(window.frames, dtype=np.float32)).permute(0, 3, 1, 2)  # (T, 3, h, w)
        low_res = (2.0 * rgb - 1.0).to(self.device)  # (T, 3, h, w)
        with torch.no_grad():
            # 1. Upsample, encode: the input latent z_lr, the posterior's draw the first of each frame's generator.
            up, size = upsample(low_res)  # (T, 3, Hp, Wp), (H, W)
            gens = generators(s.seed, window.indices)
            up = up.to(self.vae_dtype)
            with stage("encode"):  # frame by frame, pass by pass where the plan tiles the VAE, blended tiles where its states do not fit
                dist = posterior(self.encoder, up, plan)
            mean, std = dist.mean.float(), dist.std.float()  # (T, 4, hl, wl) each
            draw = frame_noise(gens, mean.shape[1], *mean.shape[2:], torch.float32).to(self.device)  # (T, 4, hl, wl)
            z_lr = (LATENT_SCALE * (mean + std * draw)).to(self.dtype)  # (T, 4, hl, wl)
            # 2. Motion guidance on the latent grid.
            hook = None
            if window.flow is not None and guided_steps(s):
                flow = latent_flow(window.flow.to(self.device), tuple(z_lr.shape[-2:]))
                hook = guidance_hook(flow, guided_steps(s), step_strength(s.motion_guidance, s.steps))
            # 3. Sample the clip.
            latents = sample_clip(
                TiledEps(self.unet, self.struct, self.text, unet_batch(plan, frames, *z_lr.shape[2:])), ddpm(s.steps), z_lr, gens, hook,
                progress=lambda i: progress(0.9 * (i + 1) / s.steps),
            )  # (T, 4, hl, wl)
            # 4. Decode with the encoder's features of the upsampled input (sampling/mgld_decode.py); crop the padding, back to x4.
            with stage("vae"):
                images = decode(self.video, latents.to(self.vae_dtype) / LATENT_SCALE, up, DEC_W, plan)  # (T, 3, Hp, Wp)
            images = images[:, :, : size[0], : size[1]].float()  # (T, 3, H, W)
            if size != (SCALE * h, SCALE * w):
                images = F.interpolate(images.clamp(-1.0, 1.0), size=(SCALE * h, SCALE * w), mode="bicubic")  # (T, 3, 4h, 4w)
            progress(1.0)
        return images.mul_(0.5).add_(0.5).permute(0, 2, 3, 1)  # (T, 4h, 4w, 3)


def unet_batch(plan: MemoryPlan | None, frames: int, h: int, w: int) -> int:
    """Clip tiles per UNet call on the (h, w) latent: the px of the plan's batch of frame tiles at its tile (what it
    budgeted: the UNet's bytes are affine in batch x tile px, memory.Cost) spent on 64-latent tiles of ``frames``
    frames, at least one. So an OOM's shrink (batch, then tile) lowers the batch; the tile stays the trained 64."""
    if plan is None:
        return 1
    planned = plan.batch * (min(plan.tile, h) * min(plan.tile, w) if plan.tile else h * w)
    return max(1, planned // (frames * min(TILE, h) * min(TILE, w)))


def on(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``network`` on ``device`` for inference, in the default layout (its Conv3d weights have no channels-last form)."""
    return network.to(device).eval()


def read(path: Path, emit: Emit) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors: its safetensors copy, made once from the pickle by the weights-only loader."""
    from safetensors.torch import load_file

    return load_file(converted(path, emit))
