"""A small ASGI app for test_lazy_app: imported only when a request reaches its LazyApp."""

from __future__ import annotations

from fastapi import FastAPI, Request

app = FastAPI()


@app.get("/hello")
def hello(who: str, request: Request) -> dict[str, str]:
    return {"hello": who, "root_path": request.scope.get("root_path", "")}
