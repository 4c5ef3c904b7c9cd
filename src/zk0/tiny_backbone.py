"""A tiny SmolVLM backbone (config + tokenizer + processor) generated locally.

SmolVLA reads its VLM backbone by name (`vlm_model_name`). Real runs use
`HuggingFaceTB/SmolVLM2-500M-Video-Instruct` from the hub; offline runs and tests
point it at a directory written here: the same architecture family at a few
hundred thousand parameters, built deterministically without any download.
"""

from __future__ import annotations

import json
from pathlib import Path

from zk0.paths import build_once

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

IMAGE_SIZE = 64
PATCH_SIZE = 16


def _text_config() -> dict:
    return {
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
    }


def _vision_config() -> dict:
    return {
        "model_type": "smolvlm_vision",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
    }


def _build(out: Path) -> None:
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
        vocab_size=_text_config()["vocab_size"] - 16,
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

    image_processor = SmolVLMImageProcessor(
        do_resize=True,
        size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
        do_image_splitting=False,
    )
    video_processor = SmolVLMVideoProcessor(
        size={"longest_edge": IMAGE_SIZE}, max_image_size={"longest_edge": IMAGE_SIZE}
    )
    processor = SmolVLMProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_len=(IMAGE_SIZE // PATCH_SIZE) ** 2 // 4,
    )
    processor.save_pretrained(out)

    config = SmolVLMConfig(
        text_config=_text_config(),
        vision_config=_vision_config(),
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        vocab_size=_text_config()["vocab_size"],
    )
    config.save_pretrained(out)
    (out / "zk0_backbone.json").write_text(json.dumps({"version": BACKBONE_VERSION}))


def ensure_tiny_backbone(cache_dir: Path) -> Path:
    """Return the tiny backbone directory under `cache_dir`, building it once."""
    return build_once(cache_dir / f"tiny-smolvlm-v{BACKBONE_VERSION}", "zk0_backbone.json", _build)
