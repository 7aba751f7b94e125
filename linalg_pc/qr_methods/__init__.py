"""qr_methods."""

__all__: list[str] = []
