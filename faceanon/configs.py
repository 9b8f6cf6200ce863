"""Small configs embedded in the package instead of downloaded (DESIGN.md section 1)."""

# SD 2.1's scheduler config. The reference implementation loads it as a DDPMScheduler.
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "v_prediction",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "skip_prk_steps": True,
}

# openai/clip-vit-large-patch14's preprocessor_config.json.
CLIP_PREPROCESSOR_CONFIG = {
    "size": {"shortest_edge": 224},
    "crop_size": {"height": 224, "width": 224},
    "do_resize": True,
    "do_center_crop": True,
    "do_rescale": True,
    "do_normalize": True,
    "do_convert_rgb": True,
    "resample": 3,  # bicubic
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}

VAE_SCALING_FACTOR = 0.18215
