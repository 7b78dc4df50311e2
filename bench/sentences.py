"""Language-model sentence speed: how long 1,000 sentences take with Flan-T5-large's shapes on this machine.

python bench/sentences.py [--device cpu] [--batch 64] [--tokens 16 40] [--model large|xl]

Random weights in Flan-T5's exact shapes (no download), sampled exactly as language_model.generate_sentences
samples (top_p 0.95, one batch from our prompt), with every sample forced to a fixed length, since a random
model never ends a sentence: the cost of a batch depends on the shapes and the length, not on the weights.
Prints sampled sequences per second per length and the time for 1,000 kept sentences if every sample were
kept; divide by the kept share (language_model's .json records it as 1 - rejected_share) for a real model.
"""
import argparse
import time

import torch

SHAPES = {"large": dict(d_model=1024, d_ff=2816, num_layers=24, num_heads=16),
          "xl": dict(d_model=2048, d_ff=5120, num_layers=24, num_heads=32)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--tokens", type=int, nargs="+", default=[16, 40])
    p.add_argument("--model", choices=list(SHAPES), default="large")
    a = p.parse_args()
    from transformers import T5Config, T5ForConditionalGeneration

    from pix2pix_zero.tools.language_model import PROMPT
    config = T5Config(vocab_size=32128, d_kv=64, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **SHAPES[a.model])
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config).to(a.device).eval()
    prompt_tokens = len(PROMPT.format(a="a cat", w="cat").split()) * 4 // 3  # about 4 tokens per 3 words
    ids = torch.randint(2, 32000, (1, prompt_tokens), device=a.device)
    print(f"flan-t5-{a.model} shapes ({sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters), "
          f"{a.device}, {torch.get_num_threads()} threads, batch {a.batch}, prompt {prompt_tokens} tokens")
    for tokens in a.tokens:
        with torch.no_grad():
            start = time.perf_counter()
            model.generate(ids, do_sample=True, top_p=0.95, temperature=1.0, num_return_sequences=a.batch,
                           min_new_tokens=tokens, max_new_tokens=tokens)
            seconds = time.perf_counter() - start
        rate = a.batch / seconds
        print(f"{tokens:3d} tokens a sample: {seconds:7.1f} s a batch, {rate:6.2f} samples/s, "
              f"1,000 sentences if all kept: {1000 / rate / 60:6.1f} min")


if __name__ == "__main__":
    main()
