"""Benchmarks behind ``rnnkit bench``: the grid of shapes × cells against torch.nn, the
plain PyTorch Python-loop baselines and the machine's GEMM roofline."""
