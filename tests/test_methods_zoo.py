"""The `pre_logits` exit on every model of the zoo: the embedding methods (PKT, RKD, CC, and
CRD later) read it, so its width must be what each classifier expects."""

from __future__ import annotations

import pytest
import torch

from dfa_ray.models import MODELS, create_model


@pytest.mark.parametrize("name", MODELS.names())
def test_pre_logits_has_the_classifier_width(name):
    # shapes only: on the meta device no weights are allocated and nothing is computed
    with torch.device("meta"):
        model = create_model(name, num_classes=7)
        x = torch.empty(3, 3, 32, 32)
        logits, feats, emb = model.forward_groups_embedding(x, preact=False)
        last = feats[-1][-1]
        from_head = model.forward_head(torch.empty(3, *last.shape[1:]), pre_logits=True)
    classifier = model.get_classifier()
    assert isinstance(classifier, torch.nn.Linear) and classifier.out_features == 7
    assert emb.shape == (3, classifier.in_features)
    assert from_head.shape == (3, classifier.in_features)
    assert logits.shape == (3, 7)
    assert len(feats) == model.num_groups


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "ShuffleV2"])
@pytest.mark.parametrize("preact", [True, False])
def test_pre_logits_are_what_the_classifier_maps_to_the_logits(name, preact):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats, emb = model.forward_groups_embedding(x, preact=preact)
        plain_logits, plain_feats = model.forward_groups(x, preact=preact)
        torch.testing.assert_close(model.get_classifier()(emb), logits)
        torch.testing.assert_close(logits, model(x))
        torch.testing.assert_close(plain_logits, logits)
        for a, b in zip(feats, plain_feats):
            for u, v in zip(a, b):
                torch.testing.assert_close(u, v)
    # the hook is removed afterwards: a second call sees only its own embedding
    assert not model.get_classifier()._forward_pre_hooks
