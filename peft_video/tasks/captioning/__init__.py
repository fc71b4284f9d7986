"""Video captioning on BLIP with Token Mixing (Token Mixing's main task): model, data, metrics, training."""
