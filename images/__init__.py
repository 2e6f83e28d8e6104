"""ezrunner.images: what goes *into* an image.

Dockerfile templates (``templates/``) and the embedded inference server
(``server/``). The server is copied into images on its own, so nothing under
``server/`` may import ``ezrunner.core`` or ``ezrunner.tui``.
"""
