"""One APIRouter per endpoint family (as in vLLM's OpenAI server); shared dependencies in deps."""
