"""The server's Prometheus metrics, in a registry of its own (several apps in one process never share one)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ServeMetrics:
    """Requests, latency, questions and batches, queue depth, and compression jobs of one server."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lychee_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lychee_request_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.questions = Counter("lychee_questions", "questions answered", registry=self.registry)
        self.batch_size = Histogram(
            "lychee_batch_size", "questions per generate call", buckets=(1, 2, 4, 8, 16, 32), registry=self.registry
        )
        self.queue_depth = Gauge("lychee_queue_depth", "questions waiting for the model", registry=self.registry)
        self.compressions = Counter(
            "lychee_compression_jobs", "compression jobs ended, by outcome", ["outcome"], registry=self.registry
        )
        self.compressions_running = Gauge(
            "lychee_compressions_running", "compression jobs running", registry=self.registry
        )
        self.ready = Gauge("lychee_model_ready", "1 once the model is loaded", registry=self.registry)

    def count_documents(self, statuses) -> None:
        """Adds a gauge of the store's documents per status, read at every scrape (`statuses()` -> {status: n})."""

        class _Documents:
            def collect(self):
                family = GaugeMetricFamily("lychee_documents", "documents in the store by status", labels=["status"])
                for status, count in sorted(statuses().items()):
                    family.add_metric([status], count)
                yield family

        self.registry.register(_Documents())

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
