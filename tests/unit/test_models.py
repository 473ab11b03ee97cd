"""ResponseLM: logits at the response positions only must be the full forward's logits there, with the
same gradients, for every architecture that takes the head-on-responses path and for the fallback."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from kdbench.models import LINEAR_HEAD_MODEL_TYPES, ResponseLM

VOCAB = 97
SMALL = {  # the smallest config of each architecture (tied embeddings as in kdbench's own profiles)
    "llama": dict(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                  num_key_value_heads=2, tie_word_embeddings=True),
    "mistral": dict(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                    num_key_value_heads=2, tie_word_embeddings=False),
    "qwen2": dict(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                  num_key_value_heads=2),
    "gpt2": dict(n_layer=2, n_embd=32, n_head=4),
    # Not on the head-only list (its head scales the logits): takes the full forward, then a gather.
    "cohere": dict(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                   num_key_value_heads=2, logit_scale=0.5),
}


def _model(model_type: str):
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, vocab_size=VOCAB, pad_token_id=0, **SMALL[model_type])
    return AutoModelForCausalLM.from_config(config).eval()


def _batch():
    gen = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, VOCAB, (3, 11), generator=gen)
    attention = torch.ones_like(input_ids)
    attention[1, 8:] = 0                            # right padding, as kdbench.batching.collate
    attention[2, 5:] = 0
    labels = torch.full_like(input_ids, -100)
    labels[0, 6:10] = input_ids[0, 7:11]            # response positions differ per row
    labels[1, 3:7] = input_ids[1, 4:8]
    labels[2, 4] = 5                                # a single response token
    return input_ids, attention, labels


def test_every_head_only_architecture_is_checked_here():
    assert LINEAR_HEAD_MODEL_TYPES <= set(SMALL)


@pytest.mark.parametrize("model_type", sorted(SMALL))
def test_response_logits_and_gradients_equal_the_full_forward(model_type):
    input_ids, attention, labels = _batch()
    keep = labels != -100
    model = _model(model_type)
    wrapped = ResponseLM(model)
    assert wrapped.head_on_responses_only == (model_type in LINEAR_HEAD_MODEL_TYPES)

    full = model(input_ids=input_ids, attention_mask=attention).logits
    full[keep].logsumexp(-1).sum().backward()
    expected_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    response = wrapped(input_ids, attention, labels)
    assert response.shape == (int(keep.sum()), full.shape[-1])
    torch.testing.assert_close(response, full[keep].detach(), rtol=1e-5, atol=1e-5)
    response.logsumexp(-1).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-6, msg=name)
