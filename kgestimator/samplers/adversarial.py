"""DANS: generated negative embeddings from a two-way generator (docs/algorithms.md §4.5).

Two generators with FiLM conditioning produce candidate-side embeddings:

* ``G_E`` (entity pathway) is conditioned on the kept entity's embedding;
* ``G_R`` (entity-relation pathway) is conditioned on the model's *query
  vector* for the kept entity and relation. For DistMult that is ``e ⊙ r``,
  the reference's input for tails; for heads the reference uses ``e ⊙ (1/r)``,
  which blows up near ``r = 0`` (docs/algorithms.md §7.2), whereas the query vector is the
  model's own notion of "what the missing entity should look like" and works
  for every model (ComplEx, RotatE, HAKE, TransE), so the pathway is not tied
  to a diagonal relation.

A two-head discriminator (adversarial head: real entity or fake; auxiliary
head: which pathway made a fake) trains against them. At each training step
(``generate(..., train=True)``) the GAN first takes one generator step per
pathway and ``d_steps`` discriminator steps on the batch (real samples: the
batch's head and tail embeddings, detached), then the frozen generators
produce ``n_fake`` negatives per pathway and positive; the gradient of the
base loss flows through them into the anchors, as in the reference.

The base model stays the estimator's model (the reference fine-tunes an
R-GCN + DistMult). Bugs of the reference code fixed here (docs/algorithms.md §7.2):

* FiLM networks live inside the generators and are trained by their optimiser
  (the reference never optimises them); ``legacy_frozen_film=True`` freezes them;
* the auxiliary loss is a binary cross-entropy on ``D_aux``; the reference's
  ``CrossEntropyLoss`` on one sigmoid unit is identically 0 (``aux_weight=0``
  reproduces that);
* the ``G_E`` and ``G_R`` negatives are separate tensors; the reference
  aliases them, so the base model sees ``G_R``'s twice and ``G_E``'s never
  (``legacy_aliasing=True`` reproduces that).

BatchNorm keeps the reference's ``eps=0.8`` (a GAN-template slip for momentum),
since the generator's behaviour was tuned with it.
"""

import contextlib

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .._utils import check_choice, check_number
from ._uniform import UniformSampler


def _lrelu(x):
    return F.leaky_relu(x, 0.2)


def _adam(params, lr, betas):
    """Adam with its fused kernel where the device has one: the 10 discriminator steps of a training
    step each update 14 small tensors, and the unfused update took about 2 ms a step on one CPU core."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, ValueError, TypeError):  # device or dtype without fused kernels
        return torch.optim.Adam(params, lr=lr, betas=betas)


def _distinct_rows(model):
    """Whether equal ids give equal embeddings (no dropout draws per looked-up row)."""
    return not (model.training and (model.entity_dropout or model.relation_dropout))


def _first(inverse, n):
    """The first row of each of the ``n`` groups of ``inverse``."""
    first = torch.full((n,), inverse.numel(), dtype=torch.long, device=inverse.device)
    return first.scatter_reduce_(0, inverse, torch.arange(inverse.numel(), device=inverse.device), reduce="amin")


def _groups(model, batch, side):
    """``(by_entity, by_query)``: the ``(first, inverse)`` groups of the positives that share the kept
    entity, and the kept entity and relation, on ``side`` (the conditions of the two pathways); None
    where rows of equal ids may differ. FiLM then runs once per distinct condition: FB15k-237 batches
    repeat few, nations' 14 entities make its 1,000 entity conditions 14."""
    if not _distinct_rows(model):
        return None, None
    anchor = batch[:, 0] if side == "tail" else batch[:, 2]
    out = []
    for key in (anchor, anchor * model.n_relations + batch[:, 1]):
        uniq, inverse = torch.unique(key, return_inverse=True)
        out.append((_first(inverse, uniq.numel()), inverse))
    return out


@contextlib.contextmanager
def _frozen(net):
    """Run ``net`` without recording gradients for its weights (inputs keep theirs)."""
    params = [p for p in net.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class FiLM(nn.Module):
    """Four bias-free two-layer MLPs giving ``alpha1, beta1, alpha2, beta2`` from a condition.

    The four first layers are one ``Linear`` and the four second layers one
    batched product: the same networks as four ``Sequential`` blocks, in two
    kernels instead of eight.
    """

    def __init__(self, in_dim, hidden, width=100):
        super().__init__()
        self.width = width
        self.first = nn.Linear(in_dim, 4 * width, bias=False)
        bound = 1.0 / width ** 0.5  # nn.Linear's default init for the second layers
        self.second = nn.Parameter(torch.empty(4, width, hidden).uniform_(-bound, bound))

    def forward(self, cond):
        u = _lrelu(self.first(cond)).view(-1, 4, self.width).transpose(0, 1)   # (4, n, width)
        return list(_lrelu(torch.bmm(u, self.second)))


class Generator(nn.Module):
    """DANS generator trunk with FiLM modulation; output in ``[-1, 1]^out_dim``."""

    def __init__(self, in_dim, out_dim, hidden):
        super().__init__()
        self.film = FiLM(in_dim, hidden)
        self.lin1 = nn.Linear(in_dim, hidden)
        self.lin2 = nn.Linear(hidden, hidden)
        self.lin3 = nn.Linear(hidden, out_dim)
        self.bn1 = nn.BatchNorm1d(hidden, eps=0.8)
        self.bn2 = nn.BatchNorm1d(hidden, eps=0.8)

    def forward(self, x, noise, groups=None):
        """Fakes ``(n, copies, out_dim)`` for conditions ``x`` (n, in_dim) and noise ``(n, copies, in_dim)``.

        Returns ``(fakes, film_penalty)``. FiLM sees the condition once per row,
        not once per copy; with ``groups = (first, inverse)`` (rows ``inverse[i]``
        and ``first[inverse[i]]`` hold the same condition) once per distinct condition.
        """
        n, copies = noise.shape[0], noise.shape[1]
        film = self.film(x if groups is None else x[groups[0]])
        if groups is not None:
            film = [f[groups[1]] for f in film]
        a1, b1, a2, b2 = (f.unsqueeze(1) for f in film)
        u = _lrelu(self.lin1(x.unsqueeze(1) + noise))                     # (n, copies, hidden)
        u = _lrelu(self.bn1((a1 * u + b1).reshape(n * copies, -1))).view(n, copies, -1)
        u = _lrelu(self.lin2(u))
        u = _lrelu(self.bn2((a2 * u + b2).reshape(n * copies, -1))).view(n, copies, -1)
        penalty = ((a1 - 1).norm() + (a2 - 1).norm() + b1.norm() + b2.norm()) / 4
        return torch.tanh(self.lin3(u)), penalty


def _composed(linears):
    """``(weight (1, d_in), bias (1,))`` of a stack of linear layers applied in order."""
    layers = list(linears)
    w, b = layers[0].weight, layers[0].bias
    for layer in layers[1:]:
        w, b = layer.weight @ w, layer.weight @ b + layer.bias
    return w, b


class Discriminator(nn.Module):
    """Shared trunk with an adversarial head (real/fake) and an auxiliary head (pathway)."""

    def __init__(self, dim):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(dim, 50), nn.LeakyReLU(0.2), nn.Linear(50, 32))

        def head():  # no nonlinearity between these linears, as in the reference
            return nn.Sequential(nn.Linear(32, 16), nn.Linear(16, 8), nn.Linear(8, 1))

        self.adv, self.aux = head(), head()

    def forward(self, x):
        z = self.trunk(x)
        # each head is three linears without a nonlinearity, so one affine map: composed first, the
        # two heads are one (n, 32) x (32, 2) product instead of six products (a discriminator step
        # runs them ten times per training step); the gradients reach the same weights
        w, b = zip(*(_composed(head) for head in (self.adv, self.aux)))
        out = torch.addmm(torch.cat(b), z, torch.cat(w).t())
        return out[:, 0], out[:, 1]


class AdversarialSampler(UniformSampler):
    """DANS adversarial negatives: uniform ids plus generated embeddings.

    Of the ``n_negatives`` per positive, ``2 * n_fake`` are generated (``n_fake``
    per pathway) and the rest are uniform ids. Sides alternate per step.

    Parameters
    ----------
    n_fake : int, default=5
        Generated negatives per pathway and positive, as in the reference (where
        they join 10 uniform ones).
    hidden_dim : int, default=100
        Width of the generator trunk.
    noise_std : float, default=0.01
        Standard deviation of the Gaussian noise added to the condition.
    g_learning_rate, d_learning_rate : float, default=1e-3, 1e-4
        Adam learning rates (betas 0.5, 0.999) of the generators and discriminator.
    d_steps : int, default=10
        Discriminator updates per training step.
    film_reg : float, default=1e-4
        Weight of the FiLM penalty in the generator loss.
    aux_weight : float, default=1.0
        Weight of the auxiliary (pathway) loss; 0 reproduces the reference.
    legacy_frozen_film, legacy_aliasing : bool, default=False
        Reproduce the reference's bugs (see the module notes).
    """

    shares_negatives = False

    def __init__(self, n_fake=5, hidden_dim=100, noise_std=0.01, g_learning_rate=1e-3, d_learning_rate=1e-4,
                 d_steps=10, film_reg=1e-4, aux_weight=1.0, legacy_frozen_film=False, legacy_aliasing=False):
        self.n_fake = n_fake
        self.hidden_dim = hidden_dim
        self.noise_std = noise_std
        self.g_learning_rate = g_learning_rate
        self.d_learning_rate = d_learning_rate
        self.d_steps = d_steps
        self.film_reg = film_reg
        self.aux_weight = aux_weight
        self.legacy_frozen_film = legacy_frozen_film
        self.legacy_aliasing = legacy_aliasing

    @property
    def n_generated(self):
        return 2 * self.n_fake

    def _validate(self):
        owner = type(self).__name__
        for name, low in (("n_fake", 1), ("hidden_dim", 1), ("d_steps", 0)):
            check_number(name, getattr(self, name), low, integer=True, owner=owner)
        for name in ("noise_std", "g_learning_rate", "d_learning_rate", "film_reg", "aux_weight"):
            check_number(name, getattr(self, name), 0, np.finfo(float).max, owner=owner)
        for name in ("legacy_frozen_film", "legacy_aliasing"):
            check_choice(name, getattr(self, name), (False, True), owner=owner)

    def fit(self, triples, n_entities, n_relations, generator=None):
        self._validate()
        super().fit(triples, n_entities, n_relations)
        # the networks need the model's embedding sizes: built on the first step
        self.g_entity_ = self.g_relation_ = self.discriminator_ = None
        return self

    def _build(self, de, dq, device, generator):
        seed = int(torch.randint(2**62, (1,), generator=generator, device=device))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # network initialisation follows random_state
            self.g_entity_ = Generator(de, de, self.hidden_dim).to(device)
            self.g_relation_ = Generator(dq, de, self.hidden_dim).to(device)
            self.discriminator_ = Discriminator(de).to(device)
        betas = (0.5, 0.999)

        def g_params(g):
            return [p for name, p in g.named_parameters()
                    if not (self.legacy_frozen_film and name.startswith("film."))]

        self.g_optimizers_ = [_adam(g_params(g), self.g_learning_rate, betas) for g in (self.g_entity_, self.g_relation_)]
        self.d_optimizer_ = _adam(self.discriminator_.parameters(), self.d_learning_rate, betas)

    def _fake(self, g, x, generator, copies=1, groups=None):
        """``copies`` fakes per row of ``x`` (n, in_dim) -> ``(n, copies, de)`` and the FiLM penalty."""
        noise = torch.randn((x.shape[0], copies, x.shape[1]), generator=generator, device=x.device)
        return g(x, noise * self.noise_std, groups)

    def _train_gan(self, batch, model, generator):
        """One generator step per pathway, then ``d_steps`` discriminator steps."""
        if batch.shape[0] < 2:  # BatchNorm needs two rows
            return
        with torch.no_grad():
            h, r, t = model.entities(batch[:, 0]), model.relations(batch[:, 1]), model.entities(batch[:, 2])
            conditions = [(h, model.query(h, r, "tail")), (t, model.query(t, r, "head"))]
        groups = [_groups(model, batch, side) for side in ("tail", "head")]
        bce = F.binary_cross_entropy_with_logits
        fakes = []  # per pathway: (fake tails, fake heads), detached, for the discriminator
        for p, (g, opt) in enumerate(zip((self.g_entity_, self.g_relation_), self.g_optimizers_)):
            out = [self._fake(g, cond[p], generator, groups=grp[p]) for cond, grp in zip(conditions, groups)]
            with _frozen(self.discriminator_):  # the generator's loss trains only the generator
                adv = [self.discriminator_(f.squeeze(1))[0] for f, _ in out]
            loss = sum(0.5 * bce(a, torch.ones_like(a)) for a in adv)
            loss = loss + self.film_reg * sum(pen for _, pen in out)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            fakes.append([f.squeeze(1).detach() for f, _ in out])
        real, counts = torch.cat([h, t]), None
        if _distinct_rows(model):  # the real rows are entity embeddings: each distinct one once, weighted
            uniq, inverse, counts = torch.unique(torch.cat([batch[:, 0], batch[:, 2]]), return_inverse=True,
                                                 return_counts=True)
            real = real[_first(inverse, uniq.numel())]
        self._train_discriminator(real, counts, fakes)

    def _train_discriminator(self, real, counts, fakes):
        """``d_steps`` discriminator steps on the real rows and the pathways' fakes, one forward pass each.

        The rows go through the discriminator together (it has no batch statistics),
        so a step is one pass over the ``(real, fake tails, fake heads)`` stack rather
        than three; the loss keeps the reference's weights: each mean over its own rows.
        ``counts``: how many of the batch's real rows each row of ``real`` stands for, or
        None (one each); on nations' 14 entities a batch's 2,000 real rows are 14.
        """
        (e_tail, e_head), (r_tail, r_head) = fakes
        rows = torch.cat([real, e_tail, r_tail, e_head, r_head])
        sizes = [real.shape[0], e_tail.shape[0] + r_tail.shape[0], e_head.shape[0] + r_head.shape[0]]
        origin = [torch.cat([torch.ones(e.shape[0], device=rows.device), torch.zeros(r.shape[0], device=rows.device)])
                  for e, r in ((e_tail, r_tail), (e_head, r_head))]
        target_real = torch.ones(sizes[0], device=rows.device)
        weight, n_real = (None, sizes[0]) if counts is None else (counts.to(rows.dtype), int(counts.sum()))
        bce = F.binary_cross_entropy_with_logits
        for _ in range(self.d_steps):
            adv, aux = self.discriminator_(rows)
            adv, aux = adv.split(sizes), aux.split(sizes)
            # heads and tails: two of the four terms
            loss = bce(adv[0], target_real, weight=weight, reduction="sum") / (2 * n_real)
            for side in (1, 2):  # fake tails, fake heads
                loss = loss + (bce(adv[side], torch.zeros_like(adv[side]))
                               + self.aux_weight * bce(aux[side], origin[side - 1])) / 8
            self.d_optimizer_.zero_grad(set_to_none=True)
            loss.backward()
            self.d_optimizer_.step()

    def generate(self, batch, side, model, anchor, query, generator, train=False):
        """Generated negatives ``(B, 2 * n_fake, de)`` for the positives of ``batch``.

        ``anchor`` and ``query`` are the kept entities' embeddings and the query
        vectors, ``(B, 1, de)`` and ``(B, 1, dq)``; gradients flow through the
        (frozen) generators into them.
        """
        anchor, query = anchor.reshape(batch.shape[0], -1), query.reshape(batch.shape[0], -1)
        if self.g_entity_ is None:
            self._build(anchor.shape[-1], query.shape[-1], anchor.device, generator)
        if train:
            self._train_gan(batch, model, generator)
        # frozen generators: the base loss reaches the anchors and queries through them, and
        # their own weight gradients (discarded by their next step) are not computed
        by_entity, by_query = _groups(model, batch, side)
        with _frozen(self.g_relation_), _frozen(self.g_entity_):
            relation_fakes, _ = self._fake(self.g_relation_, query, generator, self.n_fake, by_query)
            if self.legacy_aliasing:
                entity_fakes, _ = self._fake(self.g_relation_, query, generator, self.n_fake, by_query)
            else:
                entity_fakes, _ = self._fake(self.g_entity_, anchor, generator, self.n_fake, by_entity)
        return torch.cat([entity_fakes, relation_fakes], 1)

    def state_dict(self):
        if self.g_entity_ is None:
            return {}
        nets = {"g_entity": self.g_entity_, "g_relation": self.g_relation_, "discriminator": self.discriminator_}
        state = {name: net.state_dict() for name, net in nets.items()}
        state.update(dims=[self.g_entity_.lin3.out_features, self.g_relation_.lin1.in_features],
                     g_opt_entity=self.g_optimizers_[0].state_dict(),
                     g_opt_relation=self.g_optimizers_[1].state_dict(),
                     d_opt=self.d_optimizer_.state_dict())
        return state

    def load_state_dict(self, state):
        if not state:
            return
        device = next(iter(state["discriminator"].values())).device
        self._build(*state["dims"], device, None)
        self.g_entity_.load_state_dict(state["g_entity"])
        self.g_relation_.load_state_dict(state["g_relation"])
        self.discriminator_.load_state_dict(state["discriminator"])
        self.g_optimizers_[0].load_state_dict(state["g_opt_entity"])
        self.g_optimizers_[1].load_state_dict(state["g_opt_relation"])
        self.d_optimizer_.load_state_dict(state["d_opt"])
