"""Quantization shared by the backends: the INT8 accuracy budget, sensitivity, significance, QAT."""
