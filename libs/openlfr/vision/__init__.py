"""Face vision: detection, landmarks, alignment, quality and embedding on top of a backend."""
