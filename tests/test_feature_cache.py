"""The frozen protocols' feature cache: a feature is reused only for the very input that made it, within a byte
budget, least recently used out first; a cached prediction is the uncached one exactly."""

from __future__ import annotations

from pathlib import Path

import torch

from rsdg_bench.baselines.encoder_adapter import EncoderAdapter
from rsdg_bench.models.feature_cache import FeatureCache, tensor_key
from rsdg_bench.protocol.task_schema import TaskCatalog


def _levels(x: torch.Tensor) -> list[torch.Tensor]:
    return [x * 2, x.mean(dim=1, keepdim=True)]


def test_keys_tell_inputs_weights_dtypes_and_shapes_apart():
    x = torch.arange(12.0).reshape(3, 2, 2)
    assert tensor_key("w", x) == tensor_key("w", x.clone())
    assert len({tensor_key("w", x), tensor_key("v", x), tensor_key("w", x.double()), tensor_key("w", x.reshape(3, 4, 1)),
                tensor_key("w", x + 1e-6)}) == 5


def test_cached_samples_are_reused_and_only_the_missing_ones_computed():
    cache = FeatureCache(budget_bytes=10**6)
    seen = []

    def compute(batch: torch.Tensor) -> list[torch.Tensor]:
        seen.append(batch.shape[0])
        return _levels(batch)

    a, b, c = (torch.randn(1, 3, 4, 4) for _ in range(3))
    first = cache.features("w", torch.cat([a, b]), compute)
    second = cache.features("w", torch.cat([b, c, a]), compute)
    assert seen == [2, 1] and (cache.hits, cache.misses) == (2, 3)
    for got, want in zip(second, _levels(torch.cat([b, c, a])), strict=True):
        assert torch.equal(got, want)
    assert torch.equal(first[0][1], second[0][0])


def test_the_budget_evicts_the_least_recently_used_and_never_keeps_an_entry_larger_than_itself():
    one = 3 * 4 * 4 * 4 + 4 * 4 * 4  # bytes of one sample's two float32 levels
    cache = FeatureCache(budget_bytes=2 * one)
    samples = [torch.randn(1, 3, 4, 4) for _ in range(3)]
    for sample in samples[:2]:
        cache.features("w", sample, _levels)
    cache.features("w", samples[0], _levels)  # sample 0 is now the most recent
    cache.features("w", samples[2], _levels)  # evicts sample 1
    assert len(cache) == 2 and cache.size_bytes == 2 * one
    misses = cache.misses
    cache.features("w", samples[0], _levels)
    cache.features("w", samples[1], _levels)
    assert cache.misses == misses + 1
    tiny = FeatureCache(budget_bytes=one - 1)
    tiny.features("w", samples[0], _levels)
    assert len(tiny) == 0 and tiny.size_bytes == 0


def test_a_frozen_protocol_caches_during_training_and_predicts_exactly_as_without():
    task = TaskCatalog().task("noldo_s12/dw-s2")
    torch.manual_seed(0)
    adapter = EncoderAdapter(preset="ssl4eo-s2rgb-resnet50-moco", protocol="frozen_upernet", weights="random")
    adapter.setup(task, ["B2", "B3", "B4"])
    assert adapter.feature_caches is None  # `run` evaluates each image once: nothing to cache
    x = torch.randn(2, 3, 64, 64)
    adapter.eval()
    with torch.no_grad():
        plain = adapter.predict(x)
        adapter.prepare_training(task, ["a"], Path("unused.pt"))  # what `train` calls before its first step
        caches = adapter.feature_caches
        assert caches is not None
        first, again = adapter.predict(x), adapter.predict(x)
    assert torch.equal(first, plain) and torch.equal(again, plain)
    assert (caches[False].hits, caches[False].misses) == (2, 2)  # the selection split's (eval mode)
    adapter.module.train()  # a training draw goes to the other cache: neither evicts the other
    adapter.predict(x)
    assert (caches[True].hits, caches[True].misses, len(caches[False])) == (0, 2, 2)
    full = EncoderAdapter(preset="ssl4eo-s2rgb-resnet50-moco", protocol="finetune_upernet", weights="random")
    full.setup(task, ["B2", "B3", "B4"])
    full.prepare_training(task, ["a"], Path("unused.pt"))
    assert full.feature_caches is None  # a trained encoder's features change every step
