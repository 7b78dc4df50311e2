"""Edit directions (pix2pix-zero, arXiv:2302.03027, sec. 3.2 "Discovering Edit Directions"):
delta_c = mean c(target sentences) - mean c(source sentences).

Each concept ("cat") is described by many sentences; the mean is over the full (L, D) CLIP embedding
sequence of every sentence, as in the paper. The paper's sentences come from a language model; offline, the
built-in bank of caption templates below (written for this project) is filled with the word. Sentence files
and the cache of mean embeddings are in tools/sentences.py.
"""
import torch

from .models.sd import StableDiffusion

# {a}: the concept with its article ("a cat", "an owl"); {w}: the bare word.
TEMPLATES = [
    "a photo of {a}", "a close-up photo of {a}", "a blurry photo of {a}", "a bright photo of {a}",
    "a dark photo of {a}", "a cropped photo of {a}", "a black and white photo of {a}", "a low resolution photo of {a}",
    "a high resolution photo of {a}", "an old photo of {a}", "a snapshot of {a}", "a picture of {a}",
    "a painting of {a}", "an oil painting of {a}", "a watercolor of {a}", "a sketch of {a}", "a drawing of {a}",
    "a cartoon of {a}", "a 3d render of {a}", "a sculpture of {a}", "an illustration of {a}", "a poster of {a}",
    "{a} in the snow", "{a} on the grass", "{a} on a wooden floor", "{a} on the beach", "{a} in a living room",
    "{a} in the street", "{a} in a garden", "{a} in the forest", "{a} under a blue sky", "{a} at night",
    "{a} in the rain", "{a} next to a window", "{a} on a table", "{a} in a park", "{a} indoors", "{a} outdoors",
    "a large {w}", "a small {w}", "a cute {w}", "a beautiful {w}", "a strange {w}", "a colorful {w}",
    "{a} looking at the camera", "{a} seen from the side", "{a} seen from above", "{a} in the distance",
    "{a} in soft morning light", "{a} lit by a lamp", "a professional photograph of {a}",
    "a phone photo of {a}", "a magazine photo of {a}", "a photo of {a} in the center of the frame",
    "a detailed photo of {a}", "a pixelated photo of {a}", "a photo of one {w}", "a nice photo of {a}",
]


def with_article(concept: str) -> str:
    return f"{'an' if concept[:1].lower() in 'aeiou' else 'a'} {concept}"


def template_sentences(word: str) -> list[str]:
    """The template bank filled with `word`: "a photo of a cat", "a cat in the snow", ..."""
    return [t.format(a=with_article(word), w=word) for t in TEMPLATES]


@torch.no_grad()
def mean_embedding(sd: StableDiffusion, sentences: list[str], batch_size: int = 16) -> torch.Tensor:
    """(1/K) sum_k c(sentence_k): the mean CLIP embedding sequence, (1, L, D), accumulated in float32."""
    total = None
    for i in range(0, len(sentences), batch_size):
        c = sd.encode_text(sentences[i:i + batch_size]).float().sum(0, keepdim=True)  # (1, L, D)
        total = c if total is None else total + c
    return total / len(sentences)


def edit_direction(sd: StableDiffusion, source_sentences: list[str], target_sentences: list[str]) -> torch.Tensor:
    """delta_c = mean c(target sentences) - mean c(source sentences), (1, L, D) float32 (paper sec. 3.2)."""
    return mean_embedding(sd, target_sentences) - mean_embedding(sd, source_sentences)
