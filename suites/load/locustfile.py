"""Load for the demo service: browse the catalogue, sometimes check out.

Request names are the paths, so thresholds and results address endpoints as `/api/items` and
`/api/checkout`. Run it through `verifiers.load.run_load`, which adds the result collector.
"""

from __future__ import annotations

import random

from locust import FastHttpUser, between, task


class ShopUser(FastHttpUser):
    # Short think time: a handful of users give a meaningful request rate within seconds.
    wait_time = between(0.01, 0.05)

    @task(3)
    def list_items(self) -> None:
        self.client.get("/api/items", name="/api/items")

    @task(1)
    def checkout(self) -> None:
        order = {"item_id": random.randint(1, 3), "quantity": random.randint(1, 3)}
        self.client.post("/api/checkout", json=order, name="/api/checkout")
