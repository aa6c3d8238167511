"""No-reference and paired metrics, classical baselines, the paper's Table 1 and learning curves."""
