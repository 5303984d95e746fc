"""Video media: probe, decode, encode with stream remux. Image folders live in `images.py`."""
