"""basis."""

__all__: list[str] = []
