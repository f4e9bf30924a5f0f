"""`guard serve`: an HTTP moderation server (docs/serve.md).

app.py (FastAPI routes, errors), workers.py (N loaded guards behind a bounded queue, threads or processes),
middleware.py (metrics, API key, body limits), openai_map.py (S1-S14 -> OpenAI moderation keys), template.py
(reading a client-rendered Llama Guard prompt back), schemas.py (request/response bodies, OpenAPI), metrics.py
(Prometheus), raybatch.py (JSONL batches on Ray Data). FastAPI, uvicorn and prometheus-client come with the
``serve`` extra: ``pip install -e ".[serve]"``.
"""
