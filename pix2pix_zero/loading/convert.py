"""Rule-based renaming between the original (CompVis ldm) checkpoint layout and our module names.

Our modules use the diffusers names. The original single-file layout numbers blocks sequentially
(`input_blocks.N.M`, `encoder.down.i.block.j`); the rules below derive the correspondence from the number of
levels, layers per level and which levels have attention, as a table of (original prefix, our prefix) pairs
plus a few renames inside resnets and the VAE attention. The same table renames in both directions. A spatial
transformer's inside keeps its names (`transformer_blocks.N...` in both layouts), so any depth renames alike.
"""
import re

# Inside a UNet resnet: ldm name -> our name.
UNET_RESNET = [("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("emb_layers.1.", "time_emb_proj."),
               ("out_layers.0.", "norm2."), ("out_layers.3.", "conv2."), ("skip_connection.", "conv_shortcut.")]
# Inside a VAE resnet and the VAE mid attention.
VAE_RESNET = [("nin_shortcut.", "conv_shortcut.")]
VAE_ATTENTION = [("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("proj_out.", "to_out.0.")]
# Old diffusers VAE files name the mid attention like this: old name -> our name.
LEGACY_VAE_ATTENTION = [("query.", "to_q."), ("key.", "to_k."), ("value.", "to_v."), ("proj_attn.", "to_out.0.")]

Table = list[tuple[str, str, list[tuple[str, str]]]]  # (ldm prefix, our prefix, renames inside the block)


def unet_layout(ldm_keys) -> tuple[int, int, list[bool]]:
    """(levels, layers per level, attention per level) of an original UNet from its key names."""
    down = sorted({int(m[1]) for k in ldm_keys if (m := re.match(r"input_blocks\.(\d+)\.0\.op\.", k))})
    if not down:
        raise ValueError("no downsampling layers (input_blocks.N.0.op) found in the UNet")
    layers = down[0] - 1
    levels = len(down) + 1
    attention = [any(k.startswith(f"input_blocks.{1 + i * (layers + 1)}.1.") for k in ldm_keys) for i in range(levels)]
    return levels, layers, attention


def unet_table(levels: int, layers: int, attention: list[bool], added_embedding: bool = False) -> Table:
    """added_embedding: SDXL's label_emb.0 (Linear, SiLU, Linear), our add_embedding."""
    t: Table = [("input_blocks.0.0.", "conv_in.", []), ("time_embed.0.", "time_embedding.linear_1.", []),
                ("time_embed.2.", "time_embedding.linear_2.", []), ("out.0.", "conv_norm_out.", []),
                ("out.2.", "conv_out.", []), ("middle_block.0.", "mid_block.resnets.0.", UNET_RESNET),
                ("middle_block.1.", "mid_block.attentions.0.", []),
                ("middle_block.2.", "mid_block.resnets.1.", UNET_RESNET)]
    if added_embedding:
        t += [("label_emb.0.0.", "add_embedding.linear_1.", []), ("label_emb.0.2.", "add_embedding.linear_2.", [])]
    for i in range(levels):
        for j in range(layers):
            k = 1 + i * (layers + 1) + j
            t.append((f"input_blocks.{k}.0.", f"down_blocks.{i}.resnets.{j}.", UNET_RESNET))
            if attention[i]:
                t.append((f"input_blocks.{k}.1.", f"down_blocks.{i}.attentions.{j}.", []))
        if i < levels - 1:
            t.append((f"input_blocks.{(i + 1) * (layers + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv.", []))
    up_attention = attention[::-1]
    for i in range(levels):
        for j in range(layers + 1):
            k = i * (layers + 1) + j
            t.append((f"output_blocks.{k}.0.", f"up_blocks.{i}.resnets.{j}.", UNET_RESNET))
            if up_attention[i]:
                t.append((f"output_blocks.{k}.1.", f"up_blocks.{i}.attentions.{j}.", []))
        if i < levels - 1:
            k, m = i * (layers + 1) + layers, 2 if up_attention[i] else 1
            t.append((f"output_blocks.{k}.{m}.conv.", f"up_blocks.{i}.upsamplers.0.conv.", []))
    return t


def vae_table(levels: int, layers: int) -> Table:
    t: Table = [(f"{part}.{a}.", f"{part}.{b}.", []) for part in ("encoder", "decoder")
                for a, b in (("conv_in", "conv_in"), ("norm_out", "conv_norm_out"), ("conv_out", "conv_out"))]
    t += [("quant_conv.", "quant_conv.", []), ("post_quant_conv.", "post_quant_conv.", [])]
    for part in ("encoder", "decoder"):
        t += [(f"{part}.mid.block_1.", f"{part}.mid_block.resnets.0.", VAE_RESNET),
              (f"{part}.mid.attn_1.", f"{part}.mid_block.attentions.0.", VAE_ATTENTION),
              (f"{part}.mid.block_2.", f"{part}.mid_block.resnets.1.", VAE_RESNET)]
    for i in range(levels):
        t += [(f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}.", VAE_RESNET)
              for j in range(layers)]
        t.append((f"encoder.down.{i}.downsample.", f"encoder.down_blocks.{i}.downsamplers.0.", []))
        # The original decoder counts its levels from the lowest resolution up: up.(levels-1) runs first.
        r = levels - 1 - i
        t += [(f"decoder.up.{r}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}.", VAE_RESNET)
              for j in range(layers + 1)]
        t.append((f"decoder.up.{r}.upsample.", f"decoder.up_blocks.{i}.upsamplers.0.", []))
    return t


def vae_layout(ldm_keys) -> tuple[int, int]:
    """(levels, layers per level) of an original VAE from its key names."""
    blocks = {tuple(map(int, m.groups())) for k in ldm_keys if (m := re.match(r"encoder\.down\.(\d+)\.block\.(\d+)\.", k))}
    if not blocks:
        raise ValueError("no encoder.down.i.block.j layers found in the VAE")
    return max(i for i, _ in blocks) + 1, max(j for _, j in blocks) + 1


def rename(key: str, table: Table, to_ours: bool = True) -> str | None:
    """Rename one key through the table (ldm -> ours, or ours -> ldm); None if no rule covers it."""
    for ldm, ours, inner in table:
        src, dst = (ldm, ours) if to_ours else (ours, ldm)
        if key.startswith(src):
            rest = key[len(src):]
            for a, b in inner:
                a, b = (a, b) if to_ours else (b, a)
                if rest.startswith(a):
                    rest = b + rest[len(a):]
                    break
            return dst + rest
    return None


def rename_legacy_vae(key: str, to_ours: bool = True) -> str:
    """Old diffusers VAE attention names (query, key, value, proj_attn) <-> ours; other keys unchanged."""
    head, sep, rest = key.partition("attentions.0.")
    for a, b in LEGACY_VAE_ATTENTION:
        a, b = (a, b) if to_ours else (b, a)
        if sep and rest.startswith(a):
            return head + sep + b + rest[len(a):]
    return key
