"""OpenAI-compatible HTTP serving of a LayerSkip model (`layerskip serve`): the app
(`serve.app.create_app`) and its settings (`serve.config.ServerConfig`). Nothing here imports
FastAPI until the app is built, so `layerskip serve` can say which extra is missing."""
