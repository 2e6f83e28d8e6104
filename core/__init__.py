"""ezrunner.core: the UI-free logic (discovery, hardware, plan, build, export, run).

Modules here import heavy libraries (docker, huggingface_hub, modelscope, torch)
inside the functions that need them, never at module import.
"""
