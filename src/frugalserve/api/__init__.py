"""The HTTP surface: OpenAI routes, admin, metrics."""
