import numpy as np
import torch

from unseen.data.base import table_from_labels
from unseen.data.transforms import build_transform
from unseen.embedding import embed_table
from unseen.models.network import build_model
from unseen.models.spec import ModelSpec


def test_embed_table_in_order_for_named_outputs_and_taps():
    torch.manual_seed(0)
    images = np.random.default_rng(0).integers(0, 255, (7, 16, 16), dtype=np.uint8)
    table = table_from_labels(np.arange(7) % 3, images=images)
    model = build_model(ModelSpec(backbone="convnet", in_chans=1, channels=(4, 8), embedding_dim=6)).train()
    transform = build_transform("small", 16, train=False)
    vectors = embed_table(model, table, transform, batch_size=3)
    assert vectors.shape == (7, 6) and vectors.dtype == np.float32 and model.training
    model.eval()
    direct = model(torch.stack([transform(table.load_image(i)) for i in range(7)]))
    assert np.allclose(vectors, direct["class"].detach().numpy(), atol=1e-6)
    assert embed_table(model, table, transform, output="features").shape == (7, 8)
    taps = embed_table(model, table, transform, output="tap:0")
    assert taps.shape == (7, 4 * 4 * 4)  # 4 channels on a 4×4 grid
