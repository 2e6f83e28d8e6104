"""The embedded OpenAI-compatible inference server (runs inside the images).

Self-contained: relative imports only, no ezrunner.core / ezrunner.tui, and
nothing that needs textual, docker or huggingface-hub at import time.
"""
