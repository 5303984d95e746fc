"""The real models' configs as data, and full-size random-weight networks built from them.

These are facts about the published models, kept so that benchmarks and tests can build networks of
the true size without the weights (``build_random_components``); loading never uses them (it reads
each repo's own config files).

SD x4 upscaler (``stabilityai/stable-diffusion-x4-upscaler``). Sources: the field list and values in
reference/seeds.md §4 and perf.md §3 (which checked them against the original ``x4-upscaling.yaml``
and Upscale-A-Video's copy of ``unet/config.json``), and the parameter counts they reproduce (UNet
473.4 M, VAE 55.3 M, text encoder 340.4 M = 1.36 GB in fp32; tests/test_models.py). Values marked
``# unsure`` are diffusers defaults or recalled from the repo's config.json files, and change no
parameter count; the benchmark only needs shapes and compute to match.

StableVSR (``claudiom4sir/StableVSR``, reference/nextmodels.md §1.2). Its UNet, VAE, text encoder and
tokenizer are the x4 upscaler's, except that the UNet has no class embedding (its config cannot have
one: StableVSR's code never passes class labels, which diffusers would refuse); its ControlNet is
``ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(64, 128, 256))``, whose weights
file is 831 MB (207.7 M parameters in fp32, which the config below reproduces); its scheduler file is
the x4 DDIM config with the "leading" spacing written out.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from vsrup.device import vae_dtype

UNET_CONFIG: dict[str, Any] = dict(
    sample_size=128,  # unsure (128 or 64): metadata only, does not change the network
    in_channels=7,  # 4 latent + 3 noise-augmented low-resolution RGB
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(256, 512, 512, 1024),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    only_cross_attention=(True, True, True, False),  # levels 1-3: attn1 is cross-attention too
    attention_head_dim=8,  # read by diffusers as 8 heads (64 / 64 / 128 dims per head)
    cross_attention_dim=1024,
    use_linear_projection=True,
    num_class_embeds=1000,  # the noise level 0..350 enters as a class label
    norm_num_groups=32,  # unsure: diffusers default, as in every SD UNet
    norm_eps=1e-5,  # unsure: diffusers default
    act_fn="silu",  # unsure: diffusers default
    flip_sin_to_cos=True,  # unsure: diffusers default, as in SD 2
    freq_shift=0,  # unsure: diffusers default, as in SD 2
    downsample_padding=1,  # unsure: diffusers default
    mid_block_scale_factor=1,  # unsure: diffusers default
)

VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(128, 256, 512),  # 3 levels: factor-4 latent
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    layers_per_block=2,
    norm_num_groups=32,  # unsure: diffusers default
    act_fn="silu",  # unsure: diffusers default
    sample_size=256,  # unsure: metadata only
    scaling_factor=0.08333,
)

TEXT_ENCODER_CONFIG: dict[str, Any] = dict(  # OpenCLIP ViT-H/14 text tower, last of 24 layers cut (SD 2 style)
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    hidden_act="gelu",  # unsure: SD 2's text_encoder/config.json has "gelu" (OpenCLIP), not quick_gelu
    projection_dim=512,  # unsure: the projection is not used by the pipeline
    layer_norm_eps=1e-5,
)

TOKENIZER_FACTS = dict(  # CLIPTokenizer files (vocab.json, merges.txt) cannot be rebuilt from numbers
    model_max_length=77,
    vocab_size=49408,
    pad_token="!",  # unsure: SD 2 tokenizers pad with "!" (OpenCLIP pads with id 0), not <|endoftext|>
)

SCHEDULER_CONFIG: dict[str, Any] = dict(  # scheduler/scheduler_config.json (DDIMScheduler)
    num_train_timesteps=1000,
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="scaled_linear",
    prediction_type="v_prediction",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    # timestep_spacing is absent from the file, so DDIM's default "leading" applies
)

LOW_RES_SCHEDULER_CONFIG: dict[str, Any] = dict(  # low_res_scheduler/scheduler_config.json (DDPMScheduler)
    num_train_timesteps=1000,
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="scaled_linear",
    clip_sample=True,  # unsure: irrelevant, add_noise never clips
    variance_type="fixed_small",  # unsure: irrelevant, add_noise never uses it
    # prediction_type: "epsilon" (the default); irrelevant for add_noise
)


# FLOP per latent pixel of one VAE decode and one ControlNet call, in UNet evaluations (155 / 69.3 MFLOP, perf.md
# §3; 27.3 / 69.9 counted on the full-size networks): how the families weigh a window's work in their progress.
VAE_DECODE_IN_UNET_EVALS = 155.0 / 69.3
CONTROLNET_IN_UNET_EVALS = 27.3 / 69.9

STABLEVSR_UNET_CONFIG: dict[str, Any] = {**UNET_CONFIG, "num_class_embeds": None}  # the LR frame enters clean

STABLEVSR_CONTROLNET_CONFIG: dict[str, Any] = dict(  # controlnet/config.json, as from_unet writes it
    in_channels=7,  # the UNet's own input: latent + low-resolution RGB
    conditioning_channels=3,  # the warped high-resolution RGB estimate of the neighbour frame
    conditioning_embedding_out_channels=(64, 128, 256),  # 3 levels: two stride-2 convs, HR -> latent grid
    block_out_channels=UNET_CONFIG["block_out_channels"],
    down_block_types=UNET_CONFIG["down_block_types"],
    only_cross_attention=UNET_CONFIG["only_cross_attention"],
    layers_per_block=2,
    attention_head_dim=8,
    cross_attention_dim=1024,
    use_linear_projection=True,
    num_class_embeds=None,
    norm_num_groups=32,
    flip_sin_to_cos=True,
    freq_shift=0,
    downsample_padding=1,
)

STABLEVSR_SCHEDULER_CONFIG: dict[str, Any] = {**SCHEDULER_CONFIG, "timestep_spacing": "leading"}  # read as a DDPMScheduler

# Stream-DiffVSR (``Jamichsu/Stream-DiffVSR``, reference/nextmodels.md §2.2): UNet, ControlNet, text encoder and
# tokenizer laid out as StableVSR's (the UNet config rebuilt and line-count matched, the ControlNet's 831 MB file
# matching the (64, 128, 256) embedding); the scheduler file is StableVSR's with "trailing" spacing (537 B, read);
# the VAE config is read whole. Its 166 tensors (2,052,501 parameters, 8.2 MB in fp32) are listed, from the
# published class built on this config, in tests/fixtures/stream_diffvsr_vae_keys.txt.
STREAM_SCHEDULER_CONFIG: dict[str, Any] = {**SCHEDULER_CONFIG, "timestep_spacing": "trailing"}  # DDIM: 999, 749, 499, 249
STREAM_VAE_CONFIG: dict[str, Any] = dict(  # vae/config.json ("TemporalAutoencoderTiny", diffusers 0.27.2)
    in_channels=3,
    out_channels=3,
    encoder_block_out_channels=(64, 64, 64),
    decoder_block_out_channels=(64, 64, 64),
    act_fn="relu",
    upsample_fn="nearest",
    latent_channels=4,
    upsampling_scaling_factor=2,
    num_encoder_blocks=(1, 3, 3),
    num_decoder_blocks=(3, 3, 1),
    latent_magnitude=3,
    latent_shift=0.5,
    force_upcast=False,
    scaling_factor=1.0,  # it decodes the UNet's latents (the x4 VAE's, already scaled by 0.08333) as they are
    shift_factor=0.0,
)


# Upscale-A-Video (``sczhou/Upscale-A-Video`` configs/*.json, read; reference/ports.md §2): the published
# configs as they are (3D block names, temporal fields), which models/upscale_a_video.py maps onto vsrup's
# classes. Built on them, the networks hold exactly the published keys (tests/fixtures/upscale_a_video_*_keys.txt):
# UNet 691.0 M parameters (the x4's 473.4 M + 217.6 M temporal), vae_3d 55.3 M, vae_video 113.8 M.
UAV_UNET_CONFIG: dict[str, Any] = dict(
    {k: list(v) if isinstance(v, tuple) else v for k, v in UNET_CONFIG.items()},
    down_block_types=["DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D"],
    up_block_types=["CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "UpBlock3D"],
    down_temporal_idx=[0, 1, 2, 3],
    mid_temporal=True,
    up_temporal_idx=[0, 1, 2, 3],
    temporal_module_config={"attention_block_types": ["", ""]},
)
UAV_VAE_3D_CONFIG: dict[str, Any] = dict(
    {k: list(v) if isinstance(v, tuple) else v for k, v in VAE_CONFIG.items()},
    down_block_types=["DownEncoderBlock3D"] * 3,
    up_block_types=["UpDecoderBlock3D"] * 3,
)
UAV_VAE_VIDEO_CONFIG: dict[str, Any] = dict(
    UAV_VAE_3D_CONFIG, up_block_types=["UpDecoderBlock3D_plus"] * 3, condition_img=True, condition_channels=128, use_temporal_block=True,
)


def build_random_components(
    device: str | torch.device = "meta", dtype: torch.dtype = torch.float32, family: str = "sd-x4"
) -> dict:
    """Full-size random-weight networks and the schedulers of ``family`` ("sd-x4", "stablevsr", "stream-diffvsr" or
    "upscale-a-video": its video UNet and video VAE).

    ``device="meta"`` allocates nothing (parameter counts, shapes); a real device allocates and
    initialises there (the benchmark: timing does not need real weights). No tokenizer: its files
    cannot be rebuilt from the facts above; benchmarks feed token ids directly.
    """
    from vsrup.models.temporal_tiny import TemporalAutoencoderTiny

    with torch.device(device):
        if family == "upscale-a-video":
            from vsrup.models.upscale_a_video import unet_from_config, vae_from_config

            unet = unet_from_config(UAV_UNET_CONFIG).to(dtype)
            vae = vae_from_config(UAV_VAE_VIDEO_CONFIG, video=True).to(vae_dtype(dtype))
            text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER_CONFIG)).to(dtype)
            schedulers = dict(scheduler=DDIMScheduler(**SCHEDULER_CONFIG), low_res_scheduler=DDPMScheduler(**LOW_RES_SCHEDULER_CONFIG))
            return dict(unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(), **schedulers)
        if family == "stream-diffvsr":
            unet = UNet2DConditionModel(**STABLEVSR_UNET_CONFIG).to(dtype)
            controlnet = ControlNetModel(**STABLEVSR_CONTROLNET_CONFIG).to(dtype).eval()
            vae = TemporalAutoencoderTiny(**STREAM_VAE_CONFIG).to(vae_dtype(dtype))
            text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER_CONFIG)).to(dtype)
            scheduler = DDIMScheduler.from_config(STREAM_SCHEDULER_CONFIG)
            return dict(unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(), controlnet=controlnet, scheduler=scheduler)
        if family == "stablevsr":
            unet = UNet2DConditionModel(**STABLEVSR_UNET_CONFIG).to(dtype)
            extra = dict(controlnet=ControlNetModel(**STABLEVSR_CONTROLNET_CONFIG).to(dtype).eval())
            schedulers = dict(scheduler=DDPMScheduler.from_config(STABLEVSR_SCHEDULER_CONFIG))
        else:
            unet = UNet2DConditionModel(**UNET_CONFIG).to(dtype)
            extra = {}
            schedulers = dict(scheduler=DDIMScheduler(**SCHEDULER_CONFIG), low_res_scheduler=DDPMScheduler(**LOW_RES_SCHEDULER_CONFIG))
        vae = AutoencoderKL(**VAE_CONFIG).to(vae_dtype(dtype))
        text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER_CONFIG)).to(dtype)
    return dict(unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(), **extra, **schedulers)
