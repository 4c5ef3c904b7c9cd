"""SmolVLM backbone directories (config + tokenizer + processor) generated locally.

SmolVLA reads its VLM backbone by name (`vlm_model_name`). Real runs use
`HuggingFaceTB/SmolVLM2-500M-Video-Instruct` from the hub; offline runs point it at a
directory written here, built deterministically without any download, in one of two
shapes: `TINY_BACKBONE` (the same architecture family at a few hundred thousand
parameters, for tests) or `SMOLVLM2_500M_BACKBONE` (SmolVLM2-500M's real shapes).
Only shapes are written: the weights are whatever the SmolVLA built over it holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from zk0.util.paths import build_once

# Bump when the files written below change, so stale caches are rebuilt.
BACKBONE_VERSION = 1

SPECIAL_TOKENS = {
    "pad_token": "<|pad|>",
    "bos_token": "<|im_start|>",
    "eos_token": "<end_of_utterance>",
    "unk_token": "<|unk|>",
}
# Named tokens SmolVLM's processor and SmolVLA look up as tokenizer attributes
# (`tokenizer.fake_image_token_id`, ...), as in SmolVLM2's own tokenizer config.
EXTRA_SPECIAL_TOKENS = {
    "fake_image_token": "<fake_token_around_image>",
    "image_token": "<image>",
    "global_image_token": "<global-img>",
    "end_of_utterance_token": "<end_of_utterance>",
}

TOKENIZER_CORPUS = [
    "Pick up the red cube and place it in the bin.",
    "Put the red LEGO in the bin. Turn to the right side. Rub the plush toy with the bottle.",
    "Put the stuffed animal in the mug. Grasp each utensil and place it in its organizer slot.",
    "Pick and place the pink knob. Pick up the green cubes from the white plate.",
    "Grab the pen and put it into the cylinder. Place the X in the top right box.",
    "Pick and place the green box. Grab the block and drop it on the black square.",
    "push slide lift rotate wave reach left right up down forward back open close gripper arm",
    "If the cube is red, put it in the white bucket; if white, in the red bucket.",
]

TOKENIZER_VOCAB = 496  # a byte-level BPE over the small corpus above; the embedding table may be larger


@dataclass(frozen=True)
class BackboneShape:
    """A SmolVLM architecture: its cache directory name and transformers sub-configs."""

    name: str
    text_config: dict
    vision_config: dict
    scale_factor: int


TINY_BACKBONE = BackboneShape(
    "tiny-smolvlm",
    text_config={
        "model_type": "llama",
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 2048,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
    },
    vision_config={
        "model_type": "smolvlm_vision",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 64,
        "patch_size": 16,
    },
    scale_factor=2,
)

# HuggingFaceTB/SmolVLM2-500M-Video-Instruct's config.json. The small local tokenizer
# only supplies token ids: its size changes no weight shape (the vocab is the embedding's).
SMOLVLM2_500M_BACKBONE = BackboneShape(
    "smolvlm2-500m-shape",
    text_config={
        "model_type": "llama",
        "vocab_size": 49280,
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
        "head_dim": 64,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
    },
    vision_config={
        "model_type": "smolvlm_vision",
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 512,
        "patch_size": 16,
    },
    scale_factor=4,
)


def write_backbone(out: Path, shape: BackboneShape) -> None:
    """Write a SmolVLM backbone directory (tokenizer, processor, config) of the given shape."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        SmolVLMConfig,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    specials = list(dict.fromkeys([*SPECIAL_TOKENS.values(), *EXTRA_SPECIAL_TOKENS.values()]))
    bpe = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(TOKENIZER_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        additional_special_tokens=specials[len(SPECIAL_TOKENS) :],
        extra_special_tokens=EXTRA_SPECIAL_TOKENS,
        model_max_length=2048,
        **SPECIAL_TOKENS,
    )
    tokenizer.save_pretrained(out)

    vision_config, scale_factor = shape.vision_config, shape.scale_factor
    size = {"longest_edge": vision_config["image_size"]}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(do_resize=True, size=size, max_image_size=size, do_image_splitting=False),
        tokenizer=tokenizer,
        video_processor=SmolVLMVideoProcessor(size=size, max_image_size=size),
        image_seq_len=(vision_config["image_size"] // vision_config["patch_size"]) ** 2 // scale_factor**2,
    )
    processor.save_pretrained(out)

    config = SmolVLMConfig(
        text_config=shape.text_config,
        vision_config=vision_config,
        scale_factor=scale_factor,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        vocab_size=shape.text_config["vocab_size"],
    )
    config.save_pretrained(out)


def ensure_backbone(cache_dir: Path, shape: BackboneShape) -> Path:
    """Return the backbone directory of `shape` under `cache_dir`, building it once."""

    def build(out: Path) -> None:
        write_backbone(out, shape)
        (out / "zk0_backbone.json").write_text(json.dumps({"version": BACKBONE_VERSION}))

    return build_once(cache_dir / f"{shape.name}-v{BACKBONE_VERSION}", "zk0_backbone.json", build)
