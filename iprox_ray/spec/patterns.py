"""Default module name patterns shared by several sections."""

# Attention and MLP linears of common decoder LMs, matched by name, never by attribute path.
DEFAULT_LINEAR_PATTERNS = [r"re:.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"]

# Normalisation modules, whose own weights/biases are sketched exactly beside the linears.
DEFAULT_VECTOR_PATTERNS = [r"re:.*(norm|ln_\w+|ln_f)$"]
