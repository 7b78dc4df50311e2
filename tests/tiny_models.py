"""Tiny random BLIP and T5 folders in transformers' layout, with tokenizers built here offline (no download, no
sentencepiece): what the captioner and the language-model tests load through the real code paths."""
from pathlib import Path

import torch

WORDS = ["a", "picture", "of", "photo", "the", "on", "in", "with", "sitting", "sofa", "grass", "red", "big", "small",
         "tree", "car", "house", "man", "woman", "table", "window", "street", "is", "and", "."]


def make_tiny_blip(folder: Path, seed: int = 0) -> Path:
    """BlipForConditionalGeneration (32-wide, one layer each side, 32 px images) and a BERT WordPiece tokenizer."""
    from transformers import BertTokenizerFast, BlipConfig, BlipForConditionalGeneration
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "[DEC]"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, bos_token="[DEC]")
    text = dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=37, encoder_hidden_size=32, max_position_embeddings=64,
                pad_token_id=0, sep_token_id=3, eos_token_id=3, bos_token_id=len(vocab) - 1)
    vision = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32,
                  patch_size=8)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision)).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_t5(folder: Path, seed: int = 0, extra_words: tuple[str, ...] = ()) -> Path:
    """T5ForConditionalGeneration (16-wide, one layer each side) and a word-level tokenizer with </s> and <pad>;
    `extra_words` join the vocabulary (without them it cannot write the word "cat")."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *WORDS, "write", "caption", "photograph",
                                         "showing", "dog", *extra_words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(vocab), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
                      num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    T5ForConditionalGeneration(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """CLIPModel (32-wide, one layer each side, 32 px images, 8 px patches) with the real CLIP BPE tokenizer
    (the project's clip_bpe files) and a CLIPImageProcessor at 32 px: every CLIP metric's code path."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from pix2pix_zero.loading.random_checkpoint import BPE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = CLIPTokenizer(str(BPE_DIR / "vocab.json"), str(BPE_DIR / "merges.txt"), pad_token="!")
    text = dict(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=37, max_position_embeddings=77, projection_dim=16)
    vision = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32,
                  patch_size=8, projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    model.save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def make_tiny_dino(folder: Path, seed: int = 0) -> Path:
    """ViTModel in DINO ViT-B/8's shape family (8 px patches, 224 px, qkv biases) but 32 wide, 2 layers."""
    from transformers import ViTConfig, ViTModel
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                       image_size=224, patch_size=8, qkv_bias=True)
    ViTModel(config, add_pooling_layer=False).eval().save_pretrained(folder)
    return folder
