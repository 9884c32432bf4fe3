// rnnkit's forward-only native loops and the one-step runner of a stack (infer.h states the
// entry points, their arguments and results). The gate arithmetic is that of the training
// loops (lstm.cpp, gru.cpp; the Elman cell of rnnkit/cells/elman.py) without what they keep
// for the backward; the recurrent GEMMs call BLAS directly on the buffers (no tensor, no
// dispatcher per step) with the weights as stored ((G, R) row-major, used transposed), packed
// once per call where MKL allows (gemm.h).

#include "infer.h"

#include <ATen/ops/empty_like.h>

#include "gemm.h"
#include "lstm_gates.h"

namespace rnnkit_native {
namespace {

// One LSTM row: g (4H) the pre-activations without the peepholes, c the previous cell
// state; writes c' and h = o ⊙ tanh(c') (the gate math of lstm_gates.h, as lstm.cpp's
// forward_row). Branch-free (PEEP a template argument) so that it vectorizes.
template <typename T, bool PEEP>
inline void lstm_row(const T* __restrict g, const T* __restrict c, const T* __restrict pp, T* __restrict cn_out,
                     T* __restrict h_out, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    const LstmUnit<T> u = lstm_unit<T, PEEP>(g[j], g[H + j], g[2 * H + j], g[3 * H + j], c[j], pp, H, j);
    cn_out[j] = u.c;
    h_out[j] = u.o * tanh_f(u.c);
  }
}

// One step of each family on all B rows: g (B, G) holds x W_ihᵀ + b of the step (the
// recurrent GEMM accumulates onto it), hr (B, R) the recurrent input (h ⊙ rmask), h (B, R)
// the previous state; writes the new h into out (B, R). v (B) and zc (B, H): the step's
// lengths mask and the cell state's zoneout mask, or null (they concern only the LSTM's c;
// the caller handles h). Each holds its weights' GEMMs (packed once) and its scratch.
template <typename T>
struct LstmStep {
  int64_t B, H, P;
  WeightGemm<T> rec;   // hr W_hhᵀ, W_hh (4H, P)
  WeightGemm<T> proj;  // h_full W_hrᵀ, W_hr (P, H), with projection
  Tensor peep_t;       // holds the peepholes' storage
  const T* pp;         // (3, H) or null
  Tensor c, cn, hf;    // (B, H): the cell state (updated), c' before lengths/zoneout, o ⊙ tanh(c')

  LstmStep(int64_t B_, int64_t H_, int64_t P_, const Tensor& w_hh, const Tensor& w_hr, const Tensor& peep,
           Tensor c0)
      : B(B_), H(H_), P(P_), rec(w_hh, 0, 4 * H_, P_, P_, B_), peep_t(peep),
        pp(peep.defined() ? peep.data_ptr<T>() : nullptr), c(std::move(c0)) {
    cn = at::empty({B, H}, c.options());
    if (w_hr.defined()) {
      proj = WeightGemm<T>(w_hr, 0, P, H, H, B);
      hf = at::empty({B, H}, c.options());
    }
  }

  void operator()(T* g, const T* hr, const T* /*h*/, T* out, const T* v, const T* zc) const {
    rec(g, 4 * H, hr, P, T(1));
    T* hn = hf.defined() ? hf.data_ptr<T>() : out;
    T* cp = c.data_ptr<T>();
    T* cnp = cn.data_ptr<T>();
    at::parallel_for(0, B, grain(8 * H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r = b * H;
        if (pp) {
          lstm_row<T, true>(g + b * 4 * H, cp + r, pp, cnp + r, hn + r, H);
        } else {
          lstm_row<T, false>(g + b * 4 * H, cp + r, pp, cnp + r, hn + r, H);
        }
        if (v && v[b] == T(0)) continue;  // past its length: the state stays
        if (zc) {                         // zoneout: lerp(new, old, z)
          for (int64_t j = 0; j < H; ++j) cp[r + j] = cnp[r + j] + zc[r + j] * (cp[r + j] - cnp[r + j]);
        } else {
          std::memcpy(cp + r, cnp + r, sizeof(T) * H);
        }
      }
    });
    if (hf.defined()) proj(out, P, hn, H, T(0));  // h = (o ⊙ tanh(c')) W_hrᵀ
  }
};

template <typename T>
struct GruStep {
  int64_t B, H;
  bool after;
  WeightGemm<T> rec;  // reset_after: hr W_hhᵀ (3H rows); reset_before: hr W_rzᵀ (the first 2H rows)
  WeightGemm<T> nw;   // reset_before: (r ⊙ hr) W_hnᵀ (the last H rows)
  Tensor bh;          // (3H) b_hh (zeros without bias; reset_after only)
  Tensor work;        // reset_after (B, 3H) hr W_hhᵀ; reset_before (B, H) r ⊙ hr

  GruStep(int64_t B_, int64_t H_, const Tensor& w_hh, const Tensor& b_hh, bool reset_after)
      : B(B_), H(H_), after(reset_after) {
    if (after) {
      rec = WeightGemm<T>(w_hh, 0, 3 * H, H, H, B);
      bh = b_hh.defined() ? b_hh : at::zeros({3 * H}, w_hh.options());
      work = at::empty({B, 3 * H}, w_hh.options());
    } else {
      rec = WeightGemm<T>(w_hh, 0, 2 * H, H, H, B);
      nw = WeightGemm<T>(w_hh, 2 * H, H, H, H, B);
      work = at::empty({B, H}, w_hh.options());
    }
  }

  void operator()(T* g, const T* hr, const T* h, T* out, const T*, const T*) const {
    T* wk = work.data_ptr<T>();
    if (after) {  // r, z = σ(x + rec + b), n = tanh(x_n + r ⊙ (rec_n + b_n))
      rec(wk, 3 * H, hr, H, T(0));
      const T* bhp = bh.data_ptr<T>();
      at::parallel_for(0, B, grain(6 * H), [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const T* __restrict gb = g + b * 3 * H;
          const T* __restrict rb = wk + b * 3 * H;
          const T* __restrict hb = h + b * H;
          T* __restrict ob = out + b * H;
          for (int64_t j = 0; j < H; ++j) {
            const T r = sigmoid(gb[j] + rb[j] + bhp[j]);
            const T z = sigmoid(gb[H + j] + rb[H + j] + bhp[H + j]);
            const T n = tanh_f(gb[2 * H + j] + r * (rb[2 * H + j] + bhp[2 * H + j]));
            ob[j] = n + z * (hb[j] - n);
          }
        }
      });
      return;
    }
    // reset before: r, z = σ(x + hr W_rzᵀ), n = tanh(x_n + (r ⊙ hr) W_hnᵀ)
    rec(g, 3 * H, hr, H, T(1));
    at::parallel_for(0, B, grain(6 * H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        T* __restrict gb = g + b * 3 * H;
        for (int64_t j = 0; j < 2 * H; ++j) gb[j] = sigmoid(gb[j]);
        for (int64_t j = 0; j < H; ++j) wk[b * H + j] = gb[j] * hr[b * H + j];
      }
    });
    nw(g + 2 * H, 3 * H, wk, H, T(1));
    at::parallel_for(0, B, grain(6 * H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const T* __restrict gb = g + b * 3 * H;
        const T* __restrict hb = h + b * H;
        T* __restrict ob = out + b * H;
        for (int64_t j = 0; j < H; ++j) {
          const T n = tanh_f(gb[2 * H + j]);
          ob[j] = n + gb[H + j] * (hb[j] - n);
        }
      }
    });
  }
};

template <typename T>
struct ElmanStep {
  int64_t B, H;
  WeightGemm<T> rec;  // hr W_hhᵀ, W_hh (H, H)
  bool relu;

  ElmanStep(int64_t B_, int64_t H_, const Tensor& w_hh, bool relu_)
      : B(B_), H(H_), rec(w_hh, 0, H_, H_, H_, B_), relu(relu_) {}

  void operator()(T* g, const T* hr, const T* /*h*/, T* out, const T*, const T*) const {
    rec(g, H, hr, H, T(1));
    const int64_t n = B * H;
    if (relu) {
      for (int64_t k = 0; k < n; ++k) out[k] = g[k] > T(0) ? g[k] : T(0);
    } else {
      for (int64_t k = 0; k < n; ++k) out[k] = tanh_f(g[k]);
    }
  }
};

// The time loop shared by the families: per step the recurrent input (h ⊙ rmask), the
// family's step into the output row, then lengths and zoneout on h (state_row_forward).
// Without lengths and zoneout h_{t-1} is read straight from the previous output row.
// xw (T, B, G), out (T, B, R), h (B, R) holds h_0 and gets h_T.
template <typename T, typename Step>
void time_loop(const Step& step, T* xw, int64_t G, T* out, T* h, int64_t R, const T* rm, T* hr_buf, const T* vd,
               const T* zhp, const T* zcp, int64_t Hc, int64_t Tn, int64_t B, bool reverse) {
  const bool plain = !vd && !zhp;
  const T* hp = h;
  for (int64_t s = 0; s < Tn; ++s) {
    const int64_t t = reverse ? Tn - 1 - s : s;
    const T* hr = hp;
    if (rm) {
      for (int64_t k = 0; k < B * R; ++k) hr_buf[k] = hp[k] * rm[k];
      hr = hr_buf;
    }
    T* o_t = out + t * B * R;
    step(xw + t * B * G, hr, hp, o_t, vd ? vd + t * B : nullptr, zcp ? zcp + t * B * Hc : nullptr);
    if (plain) {
      hp = o_t;
      continue;
    }
    for (int64_t b = 0; b < B; ++b) {
      state_row_forward(o_t + b * R, h + b * R, zhp ? zhp + t * B * R + b * R : nullptr,
                        vd ? vd[t * B + b] : T(1), R);
    }
  }
  if (hp != h) std::memcpy(h, hp, sizeof(T) * B * R);
}

Tensor defined_or_empty(const c10::optional<Tensor>& t) { return t.has_value() ? *t : Tensor(); }

template <typename T>
Named lstm_infer_impl(Tensor xw, Tensor h0, Tensor c0, Tensor w_hh, c10::optional<Tensor> w_hr,
                      c10::optional<Tensor> peep, c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                      c10::optional<Tensor> zh, c10::optional<Tensor> zc, bool reverse) {
  const int64_t Tn = xw.size(0), B = xw.size(1), H = c0.size(1), P = h0.size(1);
  auto opts = xw.options();
  Tensor out = at::empty({Tn, B, P}, opts);
  Tensor h = h0.clone();
  LstmStep<T> step(B, H, P, w_hh, defined_or_empty(w_hr), defined_or_empty(peep), c0.clone());
  const T* rm = ptr_or_null<T>(rmask);
  Tensor hr_buf = rm ? at::empty({B, P}, opts) : Tensor();
  time_loop<T>(step, xw.data_ptr<T>(), 4 * H, out.data_ptr<T>(), h.data_ptr<T>(), P, rm,
               rm ? hr_buf.data_ptr<T>() : nullptr, ptr_or_null<T>(valid), ptr_or_null<T>(zh), ptr_or_null<T>(zc), H,
               Tn, B, reverse);
  return {{"out", out}, {"h", h}, {"c", step.c}};
}

template <typename T>
Named gru_infer_impl(Tensor xw, Tensor h0, Tensor w_hh, c10::optional<Tensor> b_hh, c10::optional<Tensor> rmask,
                     c10::optional<Tensor> valid, c10::optional<Tensor> zh, bool reset_after, bool reverse) {
  const int64_t Tn = xw.size(0), B = xw.size(1), H = h0.size(1);
  auto opts = xw.options();
  Tensor out = at::empty({Tn, B, H}, opts);
  Tensor h = h0.clone();
  GruStep<T> step(B, H, w_hh, defined_or_empty(b_hh), reset_after);
  const T* rm = ptr_or_null<T>(rmask);
  Tensor hr_buf = rm ? at::empty({B, H}, opts) : Tensor();
  time_loop<T>(step, xw.data_ptr<T>(), 3 * H, out.data_ptr<T>(), h.data_ptr<T>(), H, rm,
               rm ? hr_buf.data_ptr<T>() : nullptr, ptr_or_null<T>(valid), ptr_or_null<T>(zh), nullptr, H, Tn, B,
               reverse);
  return {{"out", out}, {"h", h}};
}

template <typename T>
Named elman_infer_impl(Tensor xw, Tensor h0, Tensor w_hh, c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                       c10::optional<Tensor> zh, bool relu, bool reverse) {
  const int64_t Tn = xw.size(0), B = xw.size(1), H = h0.size(1);
  auto opts = xw.options();
  Tensor out = at::empty({Tn, B, H}, opts);
  Tensor h = h0.clone();
  ElmanStep<T> step(B, H, w_hh, relu);
  const T* rm = ptr_or_null<T>(rmask);
  Tensor hr_buf = rm ? at::empty({B, H}, opts) : Tensor();
  time_loop<T>(step, xw.data_ptr<T>(), H, out.data_ptr<T>(), h.data_ptr<T>(), H, rm,
               rm ? hr_buf.data_ptr<T>() : nullptr, ptr_or_null<T>(valid), ptr_or_null<T>(zh), nullptr, H, Tn, B,
               reverse);
  return {{"out", out}, {"h", h}};
}

void check_shape(const Tensor& t, std::initializer_list<int64_t> shape, const char* name) {
  TORCH_CHECK(t.sizes().equals(shape), "rnnkit native loop: ", name, " has shape ", t.sizes(), ", expected ",
              at::IntArrayRef(shape));
}

void check_common(const Tensor& xw, const Tensor& h0, const Tensor& w_hh, const c10::optional<Tensor>& rmask,
                  const c10::optional<Tensor>& valid, const c10::optional<Tensor>& zh, int64_t gates, int64_t H) {
  check(xw, "xw", xw);
  check(h0, "h0", xw);
  check(w_hh, "w_hh", xw);
  TORCH_CHECK(xw.dim() == 3 && h0.dim() == 2, "rnnkit native loop: xw must be (T, B, G) and h0 (B, R)");
  const int64_t Tn = xw.size(0), B = xw.size(1), R = h0.size(1);
  check_shape(xw, {Tn, B, gates * H}, "xw");
  check_shape(h0, {B, R}, "h0");
  check_shape(w_hh, {gates * H, R}, "w_hh");
  check_opt(rmask, "rmask", xw);
  check_opt(valid, "valid", xw);
  check_opt(zh, "zoneout h", xw);
  if (rmask.has_value() && rmask->defined()) check_shape(*rmask, {B, R}, "rmask");
  if (valid.has_value() && valid->defined()) check_shape(*valid, {Tn, B}, "valid");
  if (zh.has_value() && zh->defined()) check_shape(*zh, {Tn, B, R}, "zoneout h");
  TORCH_CHECK(xw.scalar_type() == at::kFloat || xw.scalar_type() == at::kDouble,
              "rnnkit native loop: float32 or float64 only, got ", xw.scalar_type());
}

}  // namespace

Named lstm_infer(Tensor xw, Tensor h0, Tensor c0, Tensor w_hh, c10::optional<Tensor> w_hr,
                 c10::optional<Tensor> peep, c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                 c10::optional<Tensor> zh, c10::optional<Tensor> zc, bool reverse) {
  const int64_t H = c0.size(-1);
  check_common(xw, h0, w_hh, rmask, valid, zh, 4, H);
  check(c0, "c0", xw);
  check_shape(c0, {xw.size(1), H}, "c0");
  check_opt(w_hr, "weight_hr", xw);
  check_opt(peep, "peephole", xw);
  check_opt(zc, "zoneout c", xw);
  if (w_hr.has_value() && w_hr->defined()) {
    check_shape(*w_hr, {h0.size(1), H}, "weight_hr");
  } else {
    TORCH_CHECK(h0.size(1) == H, "rnnkit native LSTM: h0 has ", h0.size(1), " units, c0 ", H);
  }
  if (peep.has_value() && peep->defined()) check_shape(*peep, {3, H}, "peephole");
  if (zc.has_value() && zc->defined()) check_shape(*zc, {xw.size(0), xw.size(1), H}, "zoneout c");
  at::NoGradGuard no_grad;
  if (xw.scalar_type() == at::kFloat) {
    return lstm_infer_impl<float>(xw, h0, c0, w_hh, w_hr, peep, rmask, valid, zh, zc, reverse);
  }
  return lstm_infer_impl<double>(xw, h0, c0, w_hh, w_hr, peep, rmask, valid, zh, zc, reverse);
}

Named gru_infer(Tensor xw, Tensor h0, Tensor w_hh, c10::optional<Tensor> b_hh, c10::optional<Tensor> rmask,
                c10::optional<Tensor> valid, c10::optional<Tensor> zh, bool reset_after, bool reverse) {
  const int64_t H = h0.size(-1);
  check_common(xw, h0, w_hh, rmask, valid, zh, 3, H);
  check_opt(b_hh, "b_hh", xw);
  if (b_hh.has_value() && b_hh->defined()) check_shape(*b_hh, {3 * H}, "b_hh");
  at::NoGradGuard no_grad;
  if (xw.scalar_type() == at::kFloat) {
    return gru_infer_impl<float>(xw, h0, w_hh, b_hh, rmask, valid, zh, reset_after, reverse);
  }
  return gru_infer_impl<double>(xw, h0, w_hh, b_hh, rmask, valid, zh, reset_after, reverse);
}

Named elman_infer(Tensor xw, Tensor h0, Tensor w_hh, c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                  c10::optional<Tensor> zh, const std::string& nonlinearity, bool reverse) {
  TORCH_CHECK(nonlinearity == "tanh" || nonlinearity == "relu",
              "rnnkit native Elman loop: nonlinearity must be tanh or relu, got '", nonlinearity, "'");
  check_common(xw, h0, w_hh, rmask, valid, zh, 1, h0.size(-1));
  at::NoGradGuard no_grad;
  const bool relu = nonlinearity == "relu";
  if (xw.scalar_type() == at::kFloat) return elman_infer_impl<float>(xw, h0, w_hh, rmask, valid, zh, relu, reverse);
  return elman_infer_impl<double>(xw, h0, w_hh, rmask, valid, zh, relu, reverse);
}

// -- StackStep -----------------------------------------------------------------------------
namespace {
enum Kind : int { kLstm = 0, kGruAfter = 1, kGruBefore = 2, kElmanTanh = 3, kElmanRelu = 4 };

int kind_from_name(const std::string& name) {
  static const std::vector<std::string> names = {"lstm", "gru", "gru_before", "elman_tanh", "elman_relu"};
  for (size_t k = 0; k < names.size(); ++k) {
    if (names[k] == name) return static_cast<int>(k);
  }
  TORCH_CHECK(false, "rnnkit StackStep: no native step for the layer kind '", name, "'");
  return 0;
}

Tensor opt_at(const std::vector<c10::optional<Tensor>>& w, size_t k) {
  return k < w.size() && w[k].has_value() ? *w[k] : Tensor();
}

// One layer of a stack, checked: its kind, weights and initial state (copied).
struct LayerSpec {
  int kind;
  int64_t G, H, R, I;
  Tensor w_ih, w_hh, bias, b_hh, w_hr, peep, h0, c0;
};

// The typed runner of StackStep (T = float or double): the layers' steps (their weights'
// GEMMs packed once), the input GEMMs, the head, the buffers.
template <typename T>
struct StackImpl : StackStep::Impl {
  struct Layer {
    int kind;
    int64_t G, R, I;
    WeightGemm<T> in;  // e W_ihᵀ
    Tensor bias, gates;
    Tensor h[2];       // the current h and the next one, swapped after each step
    int cur = 0;
    std::unique_ptr<LstmStep<T>> lstm;
    std::unique_ptr<GruStep<T>> gru;
    std::unique_ptr<ElmanStep<T>> elman;
  };
  Tensor embedding, head_w, head_b, x, logits;
  WeightGemm<T> head;
  std::vector<Layer> layers;
  int64_t B;

  StackImpl(const Tensor& emb, const std::vector<LayerSpec>& specs, const Tensor& hw, const Tensor& hb, int64_t B_)
      : embedding(emb), head_w(hw), head_b(hb), B(B_) {
    auto opts = emb.options();
    layers.resize(specs.size());
    for (size_t l = 0; l < specs.size(); ++l) {
      const LayerSpec& s = specs[l];
      Layer& L = layers[l];
      L.kind = s.kind;
      L.G = s.G;
      L.R = s.R;
      L.I = s.I;
      L.in = WeightGemm<T>(s.w_ih, 0, s.G, s.I, s.I, B);
      L.bias = s.bias;
      L.gates = at::empty({B, s.G}, opts);
      L.h[0] = s.h0;
      L.h[1] = at::empty_like(s.h0);
      if (s.kind == kLstm) {
        L.lstm = std::make_unique<LstmStep<T>>(B, s.H, s.R, s.w_hh, s.w_hr, s.peep, s.c0);
      } else if (s.kind == kGruAfter || s.kind == kGruBefore) {
        L.gru = std::make_unique<GruStep<T>>(B, s.H, s.w_hh, s.b_hh, s.kind == kGruAfter);
      } else {
        L.elman = std::make_unique<ElmanStep<T>>(B, s.H, s.w_hh, s.kind == kElmanRelu);
      }
    }
    x = at::empty({B, emb.size(1)}, opts);
    if (head_w.defined()) {
      head = WeightGemm<T>(head_w, 0, head_w.size(0), head_w.size(1), head_w.size(1), B);
      logits = at::empty({B, head_w.size(0)}, opts);
    }
  }

  Tensor step(const int64_t* ids) override {
    const int64_t E = embedding.size(1), V = embedding.size(0);
    const T* emb = embedding.template data_ptr<T>();
    T* xp = x.template data_ptr<T>();
    for (int64_t b = 0; b < B; ++b) {  // e = E[id]
      TORCH_CHECK(ids[b] >= 0 && ids[b] < V, "rnnkit StackStep: id ", ids[b], " is outside the vocabulary 0..",
                  V - 1);
      std::memcpy(xp + b * E, emb + ids[b] * E, sizeof(T) * E);
    }
    const T* in = xp;
    for (auto& L : layers) {
      T* g = L.gates.template data_ptr<T>();
      if (L.bias.defined()) {  // g = b + e W_ihᵀ, as addmm(b, e, W_ihᵀ)
        const T* bias = L.bias.template data_ptr<T>();
        for (int64_t b = 0; b < B; ++b) std::memcpy(g + b * L.G, bias, sizeof(T) * L.G);
      }
      L.in(g, L.G, in, L.I, L.bias.defined() ? T(1) : T(0));
      const T* h = L.h[L.cur].template data_ptr<T>();
      T* h_next = L.h[1 - L.cur].template data_ptr<T>();
      if (L.lstm) {
        (*L.lstm)(g, h, h, h_next, nullptr, nullptr);
      } else if (L.gru) {
        (*L.gru)(g, h, h, h_next, nullptr, nullptr);
      } else {
        (*L.elman)(g, h, h, h_next, nullptr, nullptr);
      }
      L.cur = 1 - L.cur;
      in = h_next;
    }
    if (!head_w.defined()) return layers.back().h[layers.back().cur];
    const int64_t Vh = head_w.size(0);  // logits = b + h W_headᵀ, as nn.Linear
    T* lg = logits.template data_ptr<T>();
    if (head_b.defined()) {
      for (int64_t b = 0; b < B; ++b) std::memcpy(lg + b * Vh, head_b.template data_ptr<T>(), sizeof(T) * Vh);
    }
    head(lg, Vh, in, layers.back().R, head_b.defined() ? T(1) : T(0));
    return logits;
  }

  std::vector<std::vector<Tensor>> states() const override {
    std::vector<std::vector<Tensor>> res;
    for (const auto& L : layers) {
      if (L.lstm) {
        res.push_back({L.h[L.cur], L.lstm->c});
      } else {
        res.push_back({L.h[L.cur]});
      }
    }
    return res;
  }
};
}  // namespace

StackStep::StackStep(Tensor embedding, std::vector<std::string> kinds,
                     std::vector<std::vector<c10::optional<Tensor>>> weights, std::vector<std::vector<Tensor>> states,
                     c10::optional<Tensor> head_weight, c10::optional<Tensor> head_bias) {
  at::NoGradGuard no_grad;
  TORCH_CHECK(!kinds.empty() && kinds.size() == weights.size() && kinds.size() == states.size(),
              "rnnkit StackStep: one kind, one weight list and one state list per layer");
  TORCH_CHECK(embedding.dim() == 2, "rnnkit StackStep: the embedding must be (V, E)");
  TORCH_CHECK(embedding.scalar_type() == at::kFloat || embedding.scalar_type() == at::kDouble,
              "rnnkit StackStep: float32 or float64 only");
  Tensor emb = embedding.contiguous();
  check(emb, "embedding", emb);
  TORCH_CHECK(!states[0].empty() && states[0][0].dim() == 2, "rnnkit StackStep: each state is (B, S)");
  B_ = states[0][0].size(0);
  std::vector<LayerSpec> specs;
  int64_t in_size = emb.size(1);
  for (size_t l = 0; l < kinds.size(); ++l) {
    LayerSpec s;
    s.kind = kind_from_name(kinds[l]);
    const auto& w = weights[l];
    s.w_ih = opt_at(w, 0);
    s.w_hh = opt_at(w, 1);
    s.bias = opt_at(w, 2);
    TORCH_CHECK(s.w_ih.defined() && s.w_hh.defined(), "rnnkit StackStep: layer ", l, " needs w_ih and w_hh");
    const int64_t per = s.kind == kLstm ? 4 : (s.kind == kGruAfter || s.kind == kGruBefore) ? 3 : 1;
    s.G = s.w_ih.size(0);
    s.H = s.G / per;
    s.R = s.w_hh.size(1);
    s.I = in_size;
    check(s.w_ih, "w_ih", emb);
    check(s.w_hh, "w_hh", emb);
    check_shape(s.w_ih, {per * s.H, in_size}, "w_ih");
    check_shape(s.w_hh, {per * s.H, s.R}, "w_hh");
    if (s.bias.defined()) {
      check(s.bias, "bias", emb);
      check_shape(s.bias, {s.G}, "bias");
    }
    const size_t n_state = s.kind == kLstm ? 2 : 1;
    TORCH_CHECK(states[l].size() == n_state, "rnnkit StackStep: layer ", l, " takes ", n_state, " state tensor(s)");
    check(states[l][0].contiguous(), "h", emb);
    check_shape(states[l][0], {B_, s.R}, "h");
    s.h0 = states[l][0].contiguous().clone();
    if (s.kind == kLstm) {
      s.w_hr = opt_at(w, 3);
      s.peep = opt_at(w, 4);
      if (s.w_hr.defined()) {
        check(s.w_hr, "weight_hr", emb);
        check_shape(s.w_hr, {s.R, s.H}, "weight_hr");
      } else {
        TORCH_CHECK(s.R == s.H, "rnnkit StackStep: an LSTM without projection has R = H");
      }
      if (s.peep.defined()) {
        check(s.peep, "peephole", emb);
        check_shape(s.peep, {3, s.H}, "peephole");
      }
      check(states[l][1].contiguous(), "c", emb);
      check_shape(states[l][1], {B_, s.H}, "c");
      s.c0 = states[l][1].contiguous().clone();
    } else if (s.kind == kGruAfter) {
      s.b_hh = opt_at(w, 3);
      if (s.b_hh.defined()) {
        check(s.b_hh, "b_hh", emb);
        check_shape(s.b_hh, {s.G}, "b_hh");
      }
    }
    specs.push_back(s);
    in_size = s.R;
  }
  Tensor hw, hb;
  if (head_weight.has_value() && head_weight->defined()) {
    hw = head_weight->contiguous();
    check(hw, "head weight", emb);
    check_shape(hw, {hw.size(0), in_size}, "head weight");
    if (head_bias.has_value() && head_bias->defined()) {
      hb = head_bias->contiguous();
      check(hb, "head bias", emb);
      check_shape(hb, {hw.size(0)}, "head bias");
    }
  }
  if (emb.scalar_type() == at::kFloat) {
    impl_ = std::make_shared<StackImpl<float>>(emb, specs, hw, hb, B_);
  } else {
    impl_ = std::make_shared<StackImpl<double>>(emb, specs, hw, hb, B_);
  }
}

Tensor StackStep::step(const Tensor& ids) {
  TORCH_CHECK(ids.device().is_cpu() && ids.scalar_type() == at::kLong && ids.dim() == 1 && ids.size(0) == B_,
              "rnnkit StackStep: ids must be a CPU int64 tensor of shape (", B_, ",), got ", ids.scalar_type(), " ",
              ids.sizes());
  at::NoGradGuard no_grad;
  Tensor idc = ids.contiguous();
  return impl_->step(idc.data_ptr<int64_t>());
}

std::vector<std::vector<Tensor>> StackStep::states() const { return impl_->states(); }

}  // namespace rnnkit_native
