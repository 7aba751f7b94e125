"""Error analysis: metrics, test matrices, bounds, studies and plots."""

__all__: list[str] = []
