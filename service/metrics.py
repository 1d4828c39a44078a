"""Prometheus metrics, one set per app (its own CollectorRegistry, so two apps never collide).

The HTTP side is recorded by the edge (service/edge.py: route *template*, never the raw path, so
the label set stays small); the model side by the runtime after each onnxruntime call.

With several worker processes (service/workers.py) prometheus_client's multiprocess mode is on:
each process writes its values to files in a folder the supervisor owns, and ``registry`` (what
/metrics exposes) reads and adds up the files of every worker, dead ones included, so a counter
never goes back when a worker is restarted.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INFERENCE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def multiprocess() -> bool:
    """Whether prometheus_client keeps its values in the shared files (chosen at its import)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


class Metrics:
    def __init__(self) -> None:
        # What /metrics exposes: this app's own metrics, or every worker's added up.
        self.registry = CollectorRegistry()
        own = self.registry
        if multiprocess():
            MultiProcessCollector(self.registry)
            own = CollectorRegistry()  # the metrics below write to the files
        self.requests = Counter(
            "convscope_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=own,
        )
        self.latency = Histogram(
            "convscope_http_request_duration_seconds",
            "Time from request start to the end of the response, by route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.inference = Histogram(
            "convscope_inference_seconds",
            "Time of one onnxruntime call (a whole batch).",
            ["model"],
            buckets=INFERENCE_BUCKETS,
            registry=own,
        )
        self.batch_size = Histogram(
            "convscope_batch_size",
            "Pictures per onnxruntime call.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=own,
        )
        self.pictures = Counter(
            "convscope_pictures",
            "Pictures run through a model.",
            ["model"],
            registry=own,
        )

        self.reloads = Counter(
            "convscope_model_reloads",
            "Model reloads (SIGHUP or file watch) by result: ok, or refused (old models kept).",
            ["result"],
            registry=own,
        )

        # The labelled children, looked up once per label set: .labels() costs a few us a call,
        # and the label sets are few (route templates, status codes, model names).
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._batch_children: dict[str, tuple[Any, Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_batch(self, model: str, pictures: int, seconds: float) -> None:
        children = self._batch_children.get(model)
        if children is None:
            children = (
                self.inference.labels(model),
                self.batch_size.labels(model),
                self.pictures.labels(model),
            )
            self._batch_children[model] = children
        children[0].observe(seconds)
        children[1].observe(pictures)
        children[2].inc(pictures)
