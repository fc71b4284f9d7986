"""peft-video's tuners, one folder per method in peft's layout (config.py, layer.py, model.py)."""
