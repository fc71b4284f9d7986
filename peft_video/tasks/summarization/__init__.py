"""Video-language summarization with vision-guided BART / T5 (READ-PVLA's second task): model, data, metrics, training."""
