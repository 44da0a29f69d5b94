"""A pretrained encoder from a backbone preset, put to a segmentation task under a named protocol.

Registered as `encoder`; `rsdg-bench run --model <preset> --protocol <name>` means `--model encoder --model-arg
preset=<preset> --model-arg protocol=<name>`. Options (`--model-arg key=value`):
- `preset`: a name from `encoder_presets.PRESETS` (`rsdg-bench adapter presets`);
- `protocol`: a protocol file's name (`linear_probe`, `frozen_upernet`, `finetune_upernet`, `lora_upernet`);
- `weights`: the released weights file; without it they are looked for in torch.hub's checkpoint folder (torchgeo's
  downloads) and the Hugging Face cache (timm's), under the file name the preset publishes; `random` builds the
  encoder at random (smoke tests: the records say so). A file whose sha256 does not start with the prefix its
  published name carries is refused;
- `band_policy`: what to do with an encoder band the task lacks (`band_matching`: error, zero_fill, drop);
- `feature_cache_mib`: the frozen protocols' feature cache budget during training (default 2048; 0 turns it off).

The encoder's features come from timm's `forward_intermediates`: a ViT's blocks at 1/4, 1/2, 3/4 and all of its
depth, a hierarchical network's last four stages. The weights' sha256, the preset's facts, the protocol and the
band match are part of the model's identity, so each is in every record and a change to any shows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import timm
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder
from torch import nn

from rsdg_bench.base.errors import AdapterError
from rsdg_bench.base.io import sha256_file
from rsdg_bench.models.adapters import Adapter, InputContract, Normalization, load_state_strict
from rsdg_bench.models.band_matching import BandMatch, BandPolicy, match_bands
from rsdg_bench.models.checkpoints import read_state_dict
from rsdg_bench.models.feature_cache import FeatureCache
from rsdg_bench.models.registry import register_adapter
from rsdg_bench.protocol.task_schema import Task, TrainingSpec

from .encoder_presets import EncoderPreset, get_preset
from .encoder_protocols import EncoderProtocol, get_protocol

_CLASSIFIER_KEYS = ("fc.", "head.fc.", "head.weight", "head.bias")  # released classifiers: the encoder has none
_UPERNET_CHANNELS = 256
_DEFAULT_CACHE_MIB = 2048


def feature_indices(encoder: nn.Module) -> int | list[int]:
    """What `forward_intermediates` is asked for: four evenly spaced blocks of a plain ViT, else the last four
    stages of a hierarchical network."""
    blocks = getattr(encoder, "blocks", None)
    if isinstance(blocks, nn.Sequential | nn.ModuleList) and not hasattr(encoder, "layers"):
        depth = len(blocks)
        return [depth // 4 - 1, depth // 2 - 1, 3 * depth // 4 - 1, depth - 1]
    return 4


def level_channels(encoder: nn.Module) -> list[int]:
    """The channels of the four feature levels `feature_indices` selects."""
    info = getattr(encoder, "feature_info", None)
    if not info:
        raise AdapterError(f"{type(encoder).__name__} has no feature_info", "choose a timm model with features")
    return [int(entry["num_chs"]) for entry in list(info)[-4:]]


class LinearHead(nn.Module):
    """Batch norm and a 1×1 convolution on the last feature level (DINOv2's linear segmentation probe)."""

    levels_used = (3,)

    def __init__(self, channels: list[int], num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels[-1])
        self.classifier = nn.Conv2d(channels[-1], num_classes, 1)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        return cast(torch.Tensor, self.classifier(self.norm(levels[-1])))


class UperHead(nn.Module):
    """segmentation_models_pytorch's UPerNet decoder over four levels at strides 4, 8, 16 and 32 (a plain ViT's
    single-stride levels resized bilinearly to them) and a 1×1 classifier. Its batch norms are group norms (32
    groups): a batch norm after the pyramid pooling's 1×1 cell cannot train at batch 1, which CrossEarth's
    protocols use (and smp's `layernorm` option normalizes the wrong axis of a feature map)."""

    levels_used = (0, 1, 2, 3)

    def __init__(self, channels: list[int], num_classes: int) -> None:
        super().__init__()
        self.decoder = UPerNetDecoder([channels[0], channels[0], *channels], encoder_depth=5,
                                      decoder_channels=_UPERNET_CHANNELS, use_norm="batchnorm")
        _group_norms_for_batch_norms(self.decoder)
        self.classifier = nn.Conv2d(_UPERNET_CHANNELS, num_classes, 1)

    def forward(self, levels: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        pyramid = [F.interpolate(level, size=(max(1, size[0] // stride), max(1, size[1] // stride)), mode="bilinear",
                                 align_corners=False) if level.shape[-2:] != (size[0] // stride, size[1] // stride)
                   else level for level, stride in zip(levels, (4, 8, 16, 32), strict=True)]
        return cast(torch.Tensor, self.classifier(self.decoder([pyramid[0], pyramid[0], *pyramid])))


class EncoderSegmentor(nn.Module):
    """A timm encoder and a head. Unless the whole encoder trains, it stays in eval mode whatever `train()` says (its
    batch norms keep their pretrained statistics: a frozen or LoRA-adapted encoder is the released one); a frozen
    encoder runs without gradients."""

    def __init__(self, encoder: nn.Module, head: LinearHead | UperHead, frozen: bool, pretrained_statistics: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.frozen = frozen
        self.pretrained_statistics = pretrained_statistics
        self.indices = feature_indices(encoder)

    def train(self, mode: bool = True) -> EncoderSegmentor:
        super().train(mode)
        if self.pretrained_statistics:
            self.encoder.eval()
        return self

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The head's feature levels of a normalized batch."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            intermediates = cast(Any, self.encoder).forward_intermediates  # timm's models all have it
            levels = intermediates(x, indices=self.indices, intermediates_only=True)
        return [levels[i] for i in self.head.levels_used]

    def decode(self, levels: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        if isinstance(self.head, UperHead):
            logits = self.head(levels, size)
        else:
            logits = self.head(levels)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), (x.shape[-2], x.shape[-1]))


@register_adapter("encoder")
class EncoderAdapter(Adapter):
    """A backbone preset under a protocol; trainable by the harness."""

    trainable = True
    kinds = frozenset({"segmentation"})
    precisions = frozenset({"fp32", "tf32", "bf16"})
    known_options = frozenset({"preset", "protocol", "weights", "band_policy", "feature_cache_mib"})
    options_help = "use preset=, protocol=, weights=FILE|random, band_policy=error|zero_fill|drop, feature_cache_mib="
    # `adapter check` and the contract tests: a small preset, built at random (its structure is the real one)
    check_options = {"preset": "ssl4eo-s2rgb-resnet50-moco", "protocol": "linear_probe", "weights": "random",
                     "band_policy": "zero_fill"}

    def __init__(self, **options: str) -> None:
        if "preset" not in options:
            raise AdapterError("the encoder adapter needs a preset", "pass --model <preset> or --model-arg preset=NAME "
                                                                      "(`rsdg-bench adapter presets` lists them)")
        options.setdefault("protocol", "linear_probe")
        super().__init__(**options)
        self.preset: EncoderPreset = get_preset(options["preset"])
        self.protocol: EncoderProtocol = get_protocol(options["protocol"])
        self._contract: InputContract | None = None
        self._match: BandMatch | None = None
        self._weights_sha256: str | None = None
        self._caches: dict[bool, FeatureCache] | None = None  # by module.training: draws, selection

    # ------------------------------------------------------------------ building

    def setup(self, task: Task, band_names: list[str]) -> None:
        preset = self.preset
        policy = cast(BandPolicy, self.options.get("band_policy", "error"))
        self._match = match_bands(preset.bands, band_names, policy, f"preset {preset.name}")
        kwargs = preset.timm_kwargs()
        if self.options.get("weights") == "random" and preset.architecture.startswith("resnet"):
            kwargs["zero_init_last"] = False  # at random, timm's zeroed last norms would leave each block's LoRA dead
        with torch.random.fork_rng(devices=[]):  # `weights=random`: the same encoder in `train` and in `run` (seed 0)
            torch.manual_seed(0)
            encoder = timm.create_model(preset.architecture, **kwargs)
        self._load_weights(encoder)
        if self._match.how.count("drop"):
            _keep_input_bands(encoder, self._match.kept, preset.in_chans)
        if self.protocol.encoder != "full":
            encoder.requires_grad_(False)
        if self.protocol.lora is not None:
            encoder = _with_lora(encoder, preset, self.protocol)
        channels = level_channels(encoder)
        head = (LinearHead if self.protocol.head == "linear" else UperHead)(channels, task.class_schema.num_classes)
        self.module = EncoderSegmentor(encoder, head, frozen=self.protocol.encoder == "frozen",
                                       pretrained_statistics=self.protocol.encoder != "full")
        digest = bytes.fromhex(self._weights_sha256) if self._weights_sha256 else bytes(32)  # random: zeros
        self.module.register_buffer("encoder_weights_sha256", torch.tensor(list(digest), dtype=torch.uint8))
        mean, std = preset.normalization
        fed = [i for i, band in enumerate(self._match.task_bands) if band is not None]
        self._contract = InputContract(
            num_bands=len(fed), band_names=self._match.fed,
            normalization=Normalization(mean=tuple(mean[i] for i in fed), std=tuple(std[i] for i in fed)),
            size_divisor=_size_divisor(encoder))

    def _load_weights(self, encoder: nn.Module) -> None:
        """The released weights into the encoder (strictly, the classifier aside), their sha256 checked against
        the published prefix; or, with `weights=random`, none."""
        choice = self.options.get("weights")
        if choice == "random":
            return
        path = Path(choice) if choice else self._cached_weights()
        if not path.is_file():
            raise AdapterError(f"weights file {path} for preset {self.preset.name} not found", "check --model-arg weights=")
        digest = sha256_file(path)
        prefix = self.preset.source.sha256_prefix
        if prefix and not digest.startswith(prefix):
            raise AdapterError(f"{path} has sha256 {digest[:16]}…; preset {self.preset.name}'s published file "
                               f"{self.preset.source.file_name} starts with {prefix}",
                               f"download it again from {self.preset.source.url}")
        state, _ = read_state_dict(path)
        state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_KEYS)}
        load_state_strict(encoder, state, str(path), what=f"the {self.preset.name} encoder")
        self._weights_sha256 = digest

    def _cached_weights(self) -> Path:
        """The published file in torch.hub's checkpoint folder or the Hugging Face cache; an error naming both
        places (and how to fill them) when it is in neither."""
        source = self.preset.source
        hub_file = Path(torch.hub.get_dir()) / "checkpoints" / source.file_name
        looked = [str(hub_file)]
        if hub_file.is_file():
            return hub_file
        if source.hf_hub_id:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(source.hf_hub_id, source.file_name)
            if isinstance(found, str):
                return Path(found)
            looked.append(f"the Hugging Face cache ({source.hf_hub_id}/{source.file_name})")
        raise AdapterError(f"no weights for preset {self.preset.name} (looked in {', '.join(looked)})",
                           f"download {source.url} and pass --model-arg weights=FILE, or put it in one of those "
                           "places; --model-arg weights=random builds it at random (smoke tests only)")

    # ------------------------------------------------------------------ contract and forward

    def input_contract(self) -> InputContract:
        if self._contract is None:
            raise AdapterError("encoder adapter used before setup()")
        return self._contract

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        module = cast(EncoderSegmentor, self._require_module())
        x = self._with_filled_bands(x)
        size = (x.shape[-2], x.shape[-1])
        if self._caches is not None and module.frozen:  # training draws and the selection split apart: neither evicts
            levels = self._caches[module.training].features(self._encoder_digest(), x, module.encode)  # the other
        else:
            levels = module.encode(x)
        return module.decode(levels, size)

    def _with_filled_bands(self, x: torch.Tensor) -> torch.Tensor:
        """Zeros (the training mean, after normalization) in place of the encoder bands the task lacks."""
        match = self._match
        assert match is not None  # set up
        if "zero_fill" not in match.how:
            return x
        full = x.new_zeros((x.shape[0], len(match.how), *x.shape[2:]))
        fed = [i for i, how in enumerate(match.how) if how != "zero_fill"]
        full[:, fed] = x
        return full

    def _encoder_digest(self) -> str:
        return f"{self._weights_sha256 or 'random'}:{self.preset.name}:{self.options.get('band_policy', 'error')}"

    # ------------------------------------------------------------------ training

    def training_protocol(self, spec: TrainingSpec) -> TrainingSpec:
        return self.protocol.apply(spec)

    def prepare_training(self, task: Task, source_places: list[str], checkpoint_path: Path) -> None:
        """A frozen protocol caches its features for the training run (the selection split's too)."""
        budget = int(self.options.get("feature_cache_mib", _DEFAULT_CACHE_MIB))
        if self.protocol.cache_features and budget > 0:  # half for the training draws, half for the selection split
            self._caches = {True: FeatureCache(budget * 2**19), False: FeatureCache(budget * 2**19)}

    @property
    def feature_caches(self) -> dict[bool, FeatureCache] | None:
        """The feature caches during training (frozen protocols): `True` the training draws', `False` the
        selection split's; None otherwise."""
        return self._caches

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]] | None:
        """Only what the protocol trains (a frozen encoder's parameters are not handed to the optimizer)."""
        module = self._require_module()
        return [{"params": [p for p in module.parameters() if p.requires_grad], "weight_decay": weight_decay}]

    def _chosen_band_policy(self) -> list[str]:
        """The band policy as a name tag where one other than `error` was chosen, else nothing."""
        policy = self.options.get("band_policy", "error")
        return [] if policy == "error" else [policy]

    def _keeps_released_encoder(self) -> bool:
        return self.protocol.encoder != "full"

    def trained_state(self) -> dict[str, torch.Tensor]:
        """Under a frozen or LoRA protocol, the head (and the LoRA layers) only: the encoder is the released one,
        loaded again from the same weights (their sha256 is in the checkpoint's identity and checked on load)."""
        state = self._require_module().state_dict()
        if not self._keeps_released_encoder():
            return state
        return {key: value for key, value in state.items() if not _released_key(key)}

    def load_trained_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        from rsdg_bench.models.checkpoints import load_checked

        may_be_missing = r"encoder\.(?!.*lora_)" if self._keeps_released_encoder() else None
        load_checked(self._require_module(), state, source, f"the {self.preset.name} {self.protocol.name} model",
                     may_be_missing=may_be_missing)

    def load(self, checkpoint: Path) -> None:
        """A checkpoint `train` wrote, only over the encoder weights it was trained on (the sha256 it carries as
        `encoder_weights_sha256`): a head without its encoder would run on other features, and a fine-tuned encoder
        would be recorded as grown from weights it never saw."""
        state, _ = read_state_dict(checkpoint)
        head_only = not any(_released_key(key) for key in state)
        if head_only or "encoder_weights_sha256" in state:  # a file of ours says what it was trained over
            here = cast(torch.Tensor, self._require_module().encoder_weights_sha256)
            trained_on = state.get("encoder_weights_sha256")
            if trained_on is None or not torch.equal(trained_on, here):
                raise AdapterError(
                    f"{checkpoint} was trained under {self.protocol.name} over encoder weights {_digest_text(trained_on)}; "
                    f"this run's are {_digest_text(here)}",
                    "pass the weights file it was trained with (--model-arg weights=FILE, or weights=random), or move "
                    "the checkpoint away to train one over these weights")
        self.load_trained_state(state, str(checkpoint))

    def checkpoint_stem(self, task: Task) -> str:
        """`<key>.<preset>.<protocol>`, then the band policy where it is not `error` and `random` for random
        weights: models that differ in these never share a file (other weights files are told apart on load)."""
        extras = self._chosen_band_policy()
        if self.options.get("weights") == "random":
            extras.append("random")
        return ".".join([task.checkpoint_key, self.preset.name, self.protocol.name, *extras])

    def display_name(self) -> str:
        """`<preset> · <protocol>`, with the band policy where it is not `error` and `random` for random weights."""
        extras = self._chosen_band_policy()
        if self.options.get("weights") == "random":
            extras.append("random weights")
        elif self._weights_sha256 and self.options.get("weights"):  # a file given: which one
            extras.append(f"weights {self._weights_sha256[:8]}")
        return f"{self.preset.name} · {self.protocol.name}" + (f" ({', '.join(extras)})" if extras else "")

    def identity(self) -> dict[str, Any]:
        """Name and options, with the weights file's path replaced by its sha256 (what made the numbers, not
        where the file lay), the protocol's version and the band match."""
        identity = super().identity()
        options = dict(identity["options"])
        if self._weights_sha256 is not None:  # loaded: from the file given, or found in a cache
            options["weights"] = self._weights_sha256
        elif options.get("weights") not in (None, "random"):
            options["weights"] = sha256_file(options["weights"])
        identity["options"] = options
        identity["protocol_version"] = self.protocol.version
        if self._match is not None:
            identity["bands"] = self._match.record()
        return identity


def _digest_text(digest: torch.Tensor | None) -> str:
    if digest is None:
        return "(not recorded)"
    raw = bytes(digest.tolist())
    return "random (weights=random)" if raw == bytes(32) else f"sha256 {raw.hex()[:16]}…"


def _released_key(key: str) -> bool:
    """A state key of the released encoder (not a LoRA layer added to it)."""
    return key.startswith("encoder.") and "lora_" not in key


def _group_norms_for_batch_norms(module: nn.Module) -> None:
    """Every BatchNorm2d in `module` replaced by a GroupNorm of 32 groups over the same channels."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(32, child.num_features))
        else:
            _group_norms_for_batch_norms(child)


def _size_divisor(encoder: nn.Module) -> int:
    patch = getattr(getattr(encoder, "patch_embed", None), "patch_size", None)
    if patch is not None and not hasattr(encoder, "layers"):  # a plain ViT: tokens of one patch each
        return int(patch[0] if isinstance(patch, tuple | list) else patch)
    return 32


def _first_conv(encoder: nn.Module, in_chans: int) -> tuple[nn.Module, str, nn.Conv2d]:
    for name, layer in encoder.named_modules():
        if isinstance(layer, nn.Conv2d) and layer.in_channels == in_chans:
            parent_name, _, attr = name.rpartition(".")
            return encoder.get_submodule(parent_name) if parent_name else encoder, attr, layer
    raise AdapterError(f"{type(encoder).__name__} has no first convolution over {in_chans} bands")


def _keep_input_bands(encoder: nn.Module, kept: tuple[int, ...], in_chans: int) -> None:
    """The `drop` band policy: the first layer's weights for the dropped bands removed."""
    parent, attr, conv = _first_conv(encoder, in_chans)
    sliced = nn.Conv2d(len(kept), conv.out_channels, cast(tuple[int, int], conv.kernel_size),
                       cast(tuple[int, int], conv.stride), cast(tuple[int, int], conv.padding), bias=conv.bias is not None)
    with torch.no_grad():
        sliced.weight.copy_(conv.weight[:, list(kept)])
        if conv.bias is not None and sliced.bias is not None:
            sliced.bias.copy_(conv.bias)
    setattr(parent, attr, sliced)


def _with_lora(encoder: nn.Module, preset: EncoderPreset, protocol: EncoderProtocol) -> nn.Module:
    """LoRA layers (peft) in the preset's target layers; only they train in the encoder."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as exc:
        raise AdapterError("the lora protocols need Hugging Face peft", "pip install 'rsdg-bench[lora]'") from exc
    assert protocol.lora is not None  # a lora protocol has its block (EncoderProtocol)
    targets = [name for name, _ in encoder.named_modules() if re.fullmatch(preset.lora_targets, name)]
    if not targets:
        raise AdapterError(f"preset {preset.name}'s LoRA targets {preset.lora_targets!r} match no layer")
    config = LoraConfig(r=protocol.lora.rank, lora_alpha=protocol.lora.alpha, lora_dropout=0.0,
                        target_modules=targets)
    encoder = inject_adapter_in_model(config, encoder)
    for name, parameter in encoder.named_parameters():
        parameter.requires_grad_("lora_" in name)
    return encoder
