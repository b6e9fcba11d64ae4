/* hammer_core.data.compiled._fastprep -- the prepare stage's per-row hot path in C (see hammer_core/data/compiled/fastprep.py).
 *
 * The Python implementation (hammer_core.data.prepare / masking / prompts) is the oracle: this file
 * reproduces, for the common case, exactly the bytes it writes, and tells the caller which rows
 * it does not handle (they go through Python). Tools are compiled once (literal pieces + name
 * slots: cut from their canonical text by compile_tool below, or made by Python) and registered
 * here; rows are read straight from Arrow buffers.
 *
 * Randomness: mix64 (splitmix64 of key + (counter + 1) * golden) and the name generator are
 * bit-exact copies of hammer_core.data.masking.mix64 / NameGenerator (tested against them).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

#define GOLDEN 0x9E3779B97F4A7C15ULL
#define M1 0xBF58476D1CE4E5B9ULL
#define M2 0x94D049BB133111EBULL
#define REDRAW_BASE (1ULL << 40)

#define MAX_TOOLS 60     /* tools in a row (eligibility uses a 64-bit gold mask) */
#define MAX_NAMES 512    /* function + parameter names in a row */
#define MAX_CALLS 64
#define MAX_ARGS 128     /* arguments of one call */
#define MAX_DEPTH 64

/* Errors raised from code that may run without the GIL (emit's row loop, see parsed_emit). */
static void no_memory(void) {
    PyGILState_STATE g = PyGILState_Ensure();
    PyErr_NoMemory();
    PyGILState_Release(g);
}

static void set_error(PyObject *type, const char *msg) {
    PyGILState_STATE g = PyGILState_Ensure();
    PyErr_SetString(type, msg);
    PyGILState_Release(g);
}

/* row status after parse */
#define ST_OK 0
#define ST_PYTHON 2

static inline uint64_t mix64(uint64_t key, uint64_t ctr) {
    uint64_t z = key + (ctr + 1) * GOLDEN;
    z ^= z >> 30;
    z *= M1;
    z ^= z >> 27;
    z *= M2;
    z ^= z >> 31;
    return z;
}

static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_.0123456789";
static const char ALNUM[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/* NameGenerator._generate for one index: the name's characters into out (>= hi bytes). */
static int gen_name(uint64_t key, int lo, int hi, uint64_t idx, char *out) {
    uint8_t raw[24];
    uint64_t base = idx * 3ULL;
    for (int j = 0; j < 3; j++) {
        uint64_t w = mix64(key, base + (uint64_t)j);
        for (int b = 0; b < 8; b++) raw[8 * j + b] = (uint8_t)(w >> (8 * b));
    }
    uint32_t u0 = raw[0] | ((uint32_t)raw[1] << 8);
    uint32_t u1 = raw[2] | ((uint32_t)raw[3] << 8);
    uint32_t u2 = raw[4] | ((uint32_t)raw[5] << 8);
    int span = hi - lo + 1;
    int len = lo + (int)(u0 % (uint32_t)span);
    for (int c = 0; c < hi; c++) out[c] = ALPHABET[raw[6 + c] & 63];
    out[0] = ALNUM[u1 % 62];
    out[len - 1] = ALNUM[u2 % 62];
    return len;
}

/* ------------------------------------------------------------------ growable byte buffer */

typedef struct {
    char *p;
    Py_ssize_t len, cap;
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    char *p = realloc(b->p, (size_t)cap);
    if (!p) { no_memory(); return -1; }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int buf_add(Buf *b, const char *s, Py_ssize_t n) {
    if (n <= 0) return 0;
    if (b->len + n > b->cap && buf_reserve(b, n) < 0) return -1;
    memcpy(b->p + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

static inline int buf_addc(Buf *b, char c) { return buf_add(b, &c, 1); }

#define ADDL(b, lit) buf_add((b), (lit), (Py_ssize_t)sizeof(lit) - 1)

static void buf_free(Buf *b) { free(b->p); b->p = NULL; b->len = b->cap = 0; }

/* a malloc'd buffer handed to Python as it is (buffer protocol, read-only; freed with the object):
 * the emit's big outputs go to Arrow without a copy */
typedef struct {
    PyObject_HEAD
    char *p;
    Py_ssize_t n;
} Blob;

static void blob_dealloc(Blob *b) {
    free(b->p);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static int blob_getbuffer(Blob *b, Py_buffer *view, int flags) {
    return PyBuffer_FillInfo(view, (PyObject *)b, b->p ? b->p : (char *)"", b->n, 1, flags);
}

static PyBufferProcs blob_as_buffer = {(getbufferproc)blob_getbuffer, NULL};

static PyTypeObject BlobType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hammer_core.data.compiled._fastprep.Blob",
    .tp_basicsize = sizeof(Blob),
    .tp_dealloc = (destructor)blob_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_as_buffer = &blob_as_buffer,
    .tp_doc = "bytes made by the kernel, handed over without a copy (buffer protocol)",
};

/* the n malloc'd bytes at p as a Blob, which owns them from here (freed here on failure) */
static PyObject *blob_of(void *p, Py_ssize_t n) {
    Blob *b = PyObject_New(Blob, &BlobType);
    if (!b) { free(p); return NULL; }
    b->p = p;
    b->n = n;
    return (PyObject *)b;
}

/* int32 vector */
typedef struct { int32_t *p; Py_ssize_t len, cap; } IVec;

/* room for `extra` more values */
static int ivec_reserve(IVec *v, Py_ssize_t extra) {
    if (v->len + extra <= v->cap) return 0;
    Py_ssize_t cap = v->cap ? 2 * v->cap : 1024;
    while (cap < v->len + extra) cap *= 2;
    int32_t *p = realloc(v->p, (size_t)cap * sizeof(int32_t));
    if (!p) { no_memory(); return -1; }
    v->p = p;
    v->cap = cap;
    return 0;
}

static int ivec_push(IVec *v, int32_t x) {
    if (v->len == v->cap && ivec_reserve(v, 1) < 0) return -1;
    v->p[v->len++] = x;
    return 0;
}

/* ------------------------------------------------------------------ strings (UTF-8 + str) */

typedef struct {
    PyObject *obj;     /* the str (owned) */
    const char *s;     /* its UTF-8 (owned by obj) */
    Py_ssize_t n;
    int32_t tok;       /* its entry in the token cache, valid while gen is the cache's */
    uint32_t gen;
} Str;

static int str_set(Str *x, PyObject *o) {
    if (!PyUnicode_Check(o)) { PyErr_SetString(PyExc_TypeError, "expected str"); return -1; }
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(o, &n);
    if (!s) return -1;
    Py_INCREF(o);
    x->obj = o;
    x->s = s;
    x->n = n;
    x->tok = -1;
    x->gen = 0;
    return 0;
}

static void str_clear(Str *x) { Py_CLEAR(x->obj); x->s = NULL; x->n = 0; }

/* A template: lits[0] names[slots[0]] lits[1] ... (slots index the row's names of a tool:
 * 0 = function, i + 1 = parameter i). */
typedef struct {
    int n_slots;
    Str *lits;   /* n_slots + 1 */
    int *slots;  /* n_slots */
} Tmpl;

static void tmpl_clear(Tmpl *t) {
    if (t->lits) for (int i = 0; i <= t->n_slots; i++) str_clear(&t->lits[i]);
    free(t->lits);
    free(t->slots);
    t->lits = NULL;
    t->slots = NULL;
}

/* from (lits: sequence of str, slots: sequence of int) */
static int tmpl_set(Tmpl *t, PyObject *lits, PyObject *slots, int n_names) {
    PyObject *lf = PySequence_Fast(lits, "lits"), *sf = NULL;
    if (!lf) return -1;
    sf = PySequence_Fast(slots, "slots");
    if (!sf) { Py_DECREF(lf); return -1; }
    Py_ssize_t nl = PySequence_Fast_GET_SIZE(lf), ns = PySequence_Fast_GET_SIZE(sf);
    if (nl != ns + 1) { PyErr_SetString(PyExc_ValueError, "template: len(lits) != len(slots) + 1"); goto fail; }
    t->n_slots = (int)ns;
    t->lits = calloc((size_t)nl, sizeof(Str));
    t->slots = calloc((size_t)(ns ? ns : 1), sizeof(int));
    if (!t->lits || !t->slots) { PyErr_NoMemory(); goto fail; }
    for (Py_ssize_t i = 0; i < nl; i++)
        if (str_set(&t->lits[i], PySequence_Fast_GET_ITEM(lf, i)) < 0) goto fail;
    for (Py_ssize_t i = 0; i < ns; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(sf, i));
        if (v == -1 && PyErr_Occurred()) goto fail;
        if (v < 0 || v >= n_names) { PyErr_SetString(PyExc_ValueError, "template: slot out of range"); goto fail; }
        t->slots[i] = (int)v;
    }
    Py_DECREF(lf);
    Py_DECREF(sf);
    return 0;
fail:
    Py_DECREF(lf);
    Py_XDECREF(sf);
    return -1;
}

/* ------------------------------------------------------------------ tools */

typedef struct {
    Str name_esc;       /* the function name as escaped inside JSON quotes */
    int name_id, norm_id, sig_id;
    int n_params;
    Str *params_esc;
    Tmpl canon;         /* canonical JSON, names as slots (specs inlined) */
    Tmpl shown[4];      /* the prompt's masked form, by position (2 * not-first + last) */
    PyObject *plain[4]; /* the prompt's unmasked fragments (tuple of str), by position */
    Str *plain_utf8[4]; /* the same as UTF-8 */
    int n_plain[4];
    int n_defaults;
    int *def_pi;
    Str *def_old;       /* str(default) */
} Tool;

static void tool_clear(Tool *t) {
    str_clear(&t->name_esc);
    if (t->params_esc) for (int i = 0; i < t->n_params; i++) str_clear(&t->params_esc[i]);
    free(t->params_esc);
    tmpl_clear(&t->canon);
    for (int p = 0; p < 4; p++) {
        tmpl_clear(&t->shown[p]);
        if (t->plain_utf8[p]) for (int k = 0; k < t->n_plain[p]; k++) str_clear(&t->plain_utf8[p][k]);
        Py_CLEAR(t->plain[p]);
        free(t->plain_utf8[p]);
    }
    if (t->def_old) for (int i = 0; i < t->n_defaults; i++) str_clear(&t->def_old[i]);
    free(t->def_old);
    free(t->def_pi);
}

/* ------------------------------------------------------------------ hash table: bytes -> int */

typedef struct { uint64_t h; char *key; Py_ssize_t n; int32_t val; } Slot;
typedef struct { Slot *slots; Py_ssize_t cap, used; } Table;

/* Four independent multiply chains over 32-byte strides (the keys are tool texts of ~0.5 KB and
 * prompt fragments: one chain was latency-bound), folded and finished with mix64. Only the
 * tables' layout depends on it, never an output. */
#define HB_STEP(h, w) do { (h) = ((h) ^ (w)) * 0x100000001b3ULL; (h) ^= (h) >> 29; } while (0)
static uint64_t hash_bytes(const char *s, Py_ssize_t n) {
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)n, b = 0x9e3779b97f4a7c15ULL, c = 0xbf58476d1ce4e5b9ULL,
             d = 0x94d049bb133111ebULL, w[4];
    Py_ssize_t i = 0;
    for (; i + 32 <= n; i += 32) {
        memcpy(w, s + i, 32);
        HB_STEP(h, w[0]); HB_STEP(b, w[1]); HB_STEP(c, w[2]); HB_STEP(d, w[3]);
    }
    for (; i + 8 <= n; i += 8) {
        memcpy(w, s + i, 8);
        HB_STEP(h, w[0]);
    }
    for (; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001b3ULL;
    h ^= (b << 17 | b >> 47) ^ (c << 31 | c >> 33) ^ (d << 47 | d >> 17);
    return mix64(h, 0);
}
#undef HB_STEP

static int table_grow(Table *t) {
    Py_ssize_t cap = t->cap ? 2 * t->cap : 1024;
    Slot *s = calloc((size_t)cap, sizeof(Slot));
    if (!s) { no_memory(); return -1; }
    for (Py_ssize_t i = 0; i < t->cap; i++) {
        if (!t->slots[i].key) continue;
        Py_ssize_t j = (Py_ssize_t)(t->slots[i].h & (uint64_t)(cap - 1));
        while (s[j].key) j = (j + 1) & (cap - 1);
        s[j] = t->slots[i];
    }
    free(t->slots);
    t->slots = s;
    t->cap = cap;
    return 0;
}

/* -2: absent */
static int32_t table_get(const Table *t, const char *k, Py_ssize_t n) {
    if (!t->cap) return -2;
    uint64_t h = hash_bytes(k, n);
    Py_ssize_t j = (Py_ssize_t)(h & (uint64_t)(t->cap - 1));
    while (t->slots[j].key) {
        if (t->slots[j].h == h && t->slots[j].n == n && !memcmp(t->slots[j].key, k, (size_t)n))
            return t->slots[j].val;
        j = (j + 1) & (t->cap - 1);
    }
    return -2;
}

static int table_put(Table *t, const char *k, Py_ssize_t n, int32_t val) {
    if (2 * (t->used + 1) > t->cap && table_grow(t) < 0) return -1;
    uint64_t h = hash_bytes(k, n);
    Py_ssize_t j = (Py_ssize_t)(h & (uint64_t)(t->cap - 1));
    while (t->slots[j].key) {
        if (t->slots[j].h == h && t->slots[j].n == n && !memcmp(t->slots[j].key, k, (size_t)n)) {
            t->slots[j].val = val;
            return 0;
        }
        j = (j + 1) & (t->cap - 1);
    }
    char *copy = malloc((size_t)(n ? n : 1));
    if (!copy) { no_memory(); return -1; }
    memcpy(copy, k, (size_t)n);
    t->slots[j].h = h;
    t->slots[j].key = copy;
    t->slots[j].n = n;
    t->slots[j].val = val;
    t->used++;
    return 0;
}

static void table_free(Table *t) {
    for (Py_ssize_t i = 0; i < t->cap; i++) free(t->slots[i].key);
    free(t->slots);
    t->slots = NULL;
    t->cap = t->used = 0;
}

/* ------------------------------------------------------------------ the kernel object */

#define TOOL_CHUNK_BITS 10
#define TOOL_CHUNKS 256  /* at most 256 * 1024 tools (fastprep.FastKernel.MAX_TOOLS is below) */
#define TOOL(K, i) (&(K)->tool_chunks[(i) >> TOOL_CHUNK_BITS][(i) & ((1 << TOOL_CHUNK_BITS) - 1)])

/* hammer_core.data.compiled._fastbpe's C API (capsule "hammer_core.data.compiled._fastbpe._C_API"): the ids of an ASCII text,
 * exactly as the HF tokenizer gives them; returns the number of ids (<= n, written to out), -1
 * when the text is not one the encoder handles (the caller falls back), -2 on error */
typedef Py_ssize_t (*BpeEncodeFn)(PyObject *encoder, const char *text, Py_ssize_t n, int32_t *out);

typedef struct {
    PyObject_HEAD
    uint64_t fn_key, param_key;
    uint64_t pool_size;
    double p;
    Table texts;        /* tool text -> tool id (-1: a piece that is not a tool) */
    /* the registered tools, in chunks that never move: emit (without the GIL, on another thread)
     * reads the tools of its block while parse registers the next block's new ones */
    Tool *tool_chunks[TOOL_CHUNKS];
    Py_ssize_t n_tools;
    Str head, mid, tail, no_call;   /* prompts.HEAD, MID, TAIL, NO_CALL_TARGET */
    Str whead, wtail, wsuffix;      /* wrapped (fragment tokenizer): head, tail, suffix */
    Str empty_list;                 /* "[]\n" fragment */
    /* token cache: fragment -> ids (arena[tok_start[e] .. + tok_len[e]]) */
    Table toks;
    IVec arena, tok_start, tok_len;
    uint32_t gen;
    int32_t eos;
    Py_ssize_t tok_limit;
    void *out;          /* emit's buffers, kept between calls (no page faults on every block) */
    /* the compiled byte-level BPE (hammer_core.data.compiled._fastbpe), when set: emit tokenizes the chunks of
     * fragments it misses itself instead of handing them to Python */
    PyObject *bpe_obj;
    BpeEncodeFn bpe_encode;
    IVec bpe_tmp, bpe_frag;
} Kernel;

/* ------------------------------------------------------------------ Arrow string columns */

typedef struct {
    Py_buffer off, data, valid;
    int has_valid;
    Py_ssize_t offset;   /* the array's offset (in elements) */
    Py_ssize_t n;
} Col;

static void col_release(Col *c) {
    if (c->off.obj) PyBuffer_Release(&c->off);
    if (c->data.obj) PyBuffer_Release(&c->data);
    if (c->valid.obj) PyBuffer_Release(&c->valid);
    c->has_valid = 0;
}

/* (validity or None, offsets, data or None, offset, length) */
static int col_init(Col *c, PyObject *spec) {
    memset(c, 0, sizeof(*c));
    PyObject *v, *o, *d;
    Py_ssize_t off, n;
    if (!PyArg_ParseTuple(spec, "OOOnn", &v, &o, &d, &off, &n)) return -1;
    if (PyObject_GetBuffer(o, &c->off, PyBUF_SIMPLE) < 0) return -1;
    if (d != Py_None && PyObject_GetBuffer(d, &c->data, PyBUF_SIMPLE) < 0) { col_release(c); return -1; }
    if (v != Py_None) {
        if (PyObject_GetBuffer(v, &c->valid, PyBUF_SIMPLE) < 0) { col_release(c); return -1; }
        c->has_valid = 1;
    }
    c->offset = off;
    c->n = n;
    if ((Py_ssize_t)c->off.len < (off + n + 1) * 4) {
        PyErr_SetString(PyExc_ValueError, "offsets buffer too short");
        col_release(c);
        return -1;
    }
    return 0;
}

static inline const int32_t *col_offs(const Col *c) { return (const int32_t *)c->off.buf + c->offset; }

static inline const char *col_get(const Col *c, Py_ssize_t i, Py_ssize_t *n) {
    const int32_t *o = col_offs(c);
    *n = o[i + 1] - o[i];
    return (const char *)c->data.buf + o[i];
}

static inline int col_valid(const Col *c, Py_ssize_t i) {
    if (!c->has_valid) return 1;
    Py_ssize_t k = c->offset + i;
    return (((const uint8_t *)c->valid.buf)[k >> 3] >> (k & 7)) & 1;
}

/* ------------------------------------------------------------------ canonical JSON scanning */

/* a JSON string's content at s (after the opening quote) in canonical form
 * (json.dumps(ensure_ascii=False) escapes); returns the closing quote or NULL */
static const char *scan_string(const char *s, const char *end, int *has_escape) {
    while (s < end) {
        unsigned char c = (unsigned char)*s;
        if (c == '"') return s;
        if (c < 0x20) return NULL;
        if (c == '\\') {
            if (s + 1 >= end) return NULL;
            char e = s[1];
            *has_escape = 1;
            if (e == '"' || e == '\\' || e == 'n' || e == 'r' || e == 't' || e == 'b' || e == 'f') {
                s += 2;
                continue;
            }
            if (e == 'u') {  /* only \u00XX for the control characters without a short form */
                if (s + 6 > end || s[2] != '0' || s[3] != '0') return NULL;
                int hi = s[4], lo = s[5], v;
                if (hi != '0' && hi != '1') return NULL;
                if (lo >= '0' && lo <= '9') v = lo - '0';
                else if (lo >= 'a' && lo <= 'f') v = lo - 'a' + 10;
                else return NULL;
                v += (hi - '0') * 16;
                if (v == 8 || v == 9 || v == 10 || v == 12 || v == 13) return NULL;
                s += 6;
                continue;
            }
            return NULL;
        }
        s++;
    }
    return NULL;
}

/* a number as Python's json writes it back (int repr / float repr) */
static const char *scan_number(const char *s, const char *end) {
    const char *p = s;
    int is_float = 0;
    if (p < end && *p == '-') p++;
    if (p >= end) return NULL;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') { while (p < end && *p >= '0' && *p <= '9') p++; }
    else return NULL;
    if (p < end && *p == '.') {
        is_float = 1;
        p++;
        const char *q = p;
        while (p < end && *p >= '0' && *p <= '9') p++;
        if (p == q) return NULL;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        is_float = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        const char *q = p;
        while (p < end && *p >= '0' && *p <= '9') p++;
        if (p == q) return NULL;
    }
    Py_ssize_t n = p - s;
    if (!is_float) {
        if (n == 2 && s[0] == '-' && s[1] == '0') return NULL;  /* -0 is written back as 0 */
        return p;
    }
    /* a float: must be its own repr (e.g. 1e5 is written back as 100000.0) */
    char tmp[64];
    if (n >= 40) return NULL;
    memcpy(tmp, s, (size_t)n);
    tmp[n] = 0;
    char *endp = NULL;
    double d = PyOS_string_to_double(tmp, &endp, NULL);
    if (d == -1.0 && PyErr_Occurred()) { PyErr_Clear(); return NULL; }
    if (!endp || *endp) return NULL;
    if (!Py_IS_FINITE(d)) return NULL;
    char *r = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!r) { PyErr_Clear(); return NULL; }
    int same = (Py_ssize_t)strlen(r) == n && !memcmp(r, s, (size_t)n);
    PyMem_Free(r);
    return same ? p : NULL;
}

static const char *scan_value(const char *s, const char *end, int depth);

static const char *scan_object(const char *s, const char *end, int depth) {
    /* s at '{'; keys must be distinct (a dict would merge them) */
    const char *keys[64];
    Py_ssize_t klen[64];
    int nk = 0;
    s++;
    if (s < end && *s == '}') return s + 1;
    for (;;) {
        if (s >= end || *s != '"') return NULL;
        int esc = 0;
        const char *q = scan_string(s + 1, end, &esc);
        if (!q) return NULL;
        if (nk >= 64) return NULL;
        for (int i = 0; i < nk; i++)
            if (klen[i] == q - s - 1 && !memcmp(keys[i], s + 1, (size_t)klen[i])) return NULL;
        keys[nk] = s + 1;
        klen[nk++] = q - s - 1;
        s = q + 1;
        if (s >= end || *s != ':') return NULL;
        s = scan_value(s + 1, end, depth + 1);
        if (!s || s >= end) return NULL;
        if (*s == '}') return s + 1;
        if (*s != ',') return NULL;
        s++;
    }
}

static const char *scan_value(const char *s, const char *end, int depth) {
    if (s >= end || depth > MAX_DEPTH) return NULL;
    switch (*s) {
    case '"': {
        int esc = 0;
        const char *q = scan_string(s + 1, end, &esc);
        return q ? q + 1 : NULL;
    }
    case '{':
        return scan_object(s, end, depth);
    case '[':
        s++;
        if (s < end && *s == ']') return s + 1;
        for (;;) {
            s = scan_value(s, end, depth + 1);
            if (!s || s >= end) return NULL;
            if (*s == ']') return s + 1;
            if (*s != ',') return NULL;
            s++;
        }
    case 't':
        return (end - s >= 4 && !memcmp(s, "true", 4)) ? s + 4 : NULL;
    case 'f':
        return (end - s >= 5 && !memcmp(s, "false", 5)) ? s + 5 : NULL;
    case 'n':
        return (end - s >= 4 && !memcmp(s, "null", 4)) ? s + 4 : NULL;
    default:
        return scan_number(s, end);
    }
}

/* ------------------------------------------------------------------ parsed block */

typedef struct { int32_t name_off, name_len, arg0, n_args; } Call;  /* offsets relative to the row's calls text */
typedef struct { int32_t key_off, key_len, val_off, val_len; char kind; char esc; } Arg;

typedef struct {
    uint8_t status;
    int32_t tool0, n_tools;
    int32_t call0, n_calls;
    int32_t q_user, q_sys;   /* message index of the user turn / system turn (-1: none) */
    int64_t elig;            /* plain | hard_negative << 1 | gold mask << 2 */
} Row;

typedef struct {
    PyObject_HEAD
    Kernel *kernel;
    Col tools, calls, roles, contents;
    Py_buffer msg_off;
    Py_ssize_t msg_offset;
    Py_ssize_t n;
    Row *rows;
    IVec tool_ids;
    Call *calls_v; Py_ssize_t n_calls_v, cap_calls_v;
    Arg *args_v; Py_ssize_t n_args_v, cap_args_v;
} Parsed;

static PyTypeObject ParsedType;

static void parsed_dealloc(Parsed *self) {
    col_release(&self->tools);
    col_release(&self->calls);
    col_release(&self->roles);
    col_release(&self->contents);
    if (self->msg_off.obj) PyBuffer_Release(&self->msg_off);
    free(self->rows);
    free(self->tool_ids.p);
    free(self->calls_v);
    free(self->args_v);
    Py_XDECREF(self->kernel);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int push_call(Parsed *P, Call c) {
    if (P->n_calls_v == P->cap_calls_v) {
        Py_ssize_t cap = P->cap_calls_v ? 2 * P->cap_calls_v : 1024;
        Call *p = realloc(P->calls_v, (size_t)cap * sizeof(Call));
        if (!p) { PyErr_NoMemory(); return -1; }
        P->calls_v = p;
        P->cap_calls_v = cap;
    }
    P->calls_v[P->n_calls_v++] = c;
    return 0;
}

static int push_arg(Parsed *P, Arg a) {
    if (P->n_args_v == P->cap_args_v) {
        Py_ssize_t cap = P->cap_args_v ? 2 * P->cap_args_v : 4096;
        Arg *p = realloc(P->args_v, (size_t)cap * sizeof(Arg));
        if (!p) { PyErr_NoMemory(); return -1; }
        P->args_v = p;
        P->cap_args_v = cap;
    }
    P->args_v[P->n_args_v++] = a;
    return 0;
}

/* the calls of a canonical row: [{"name":"..","arguments":{"k":v,..}},..]; 0 ok, 1 not handled, -1 error */
static int parse_calls(Parsed *P, Row *r, const char *s, Py_ssize_t n) {
    const char *p = s, *end = s + n;
    r->call0 = (int32_t)P->n_calls_v;
    r->n_calls = 0;
    if (n < 2 || p[0] != '[') return 1;
    p++;
    if (*p == ']') return p + 1 == end ? 0 : 1;
    for (;;) {
        static const char NAME[] = "{\"name\":\"";
        static const char ARGS[] = ",\"arguments\":{";
        if (end - p < 9 || memcmp(p, NAME, 9)) return 1;
        p += 9;
        int esc = 0;
        const char *q = scan_string(p, end, &esc);
        if (!q) return 1;
        Call c = {(int32_t)(p - s), (int32_t)(q - p), (int32_t)P->n_args_v, 0};
        p = q + 1;
        if (end - p < 14 || memcmp(p, ARGS, 14)) return 1;
        p += 14;
        if (p < end && *p == '}') {
            p++;
        } else {
            for (;;) {
                if (p >= end || *p != '"') return 1;
                esc = 0;
                q = scan_string(p + 1, end, &esc);
                if (!q || q + 1 >= end || q[1] != ':') return 1;
                Arg a;
                a.key_off = (int32_t)(p + 1 - s);
                a.key_len = (int32_t)(q - p - 1);
                for (int32_t k = 0; k < c.n_args; k++) {  /* distinct keys, as a dict has */
                    Arg *b = &P->args_v[c.arg0 + k];
                    if (b->key_len == a.key_len && !memcmp(s + b->key_off, s + a.key_off, (size_t)a.key_len))
                        return 1;
                }
                const char *v = q + 2;
                const char *ve = scan_value(v, end, 0);
                if (!ve) return 1;
                a.val_off = (int32_t)(v - s);
                a.val_len = (int32_t)(ve - v);
                a.kind = *v;
                a.esc = 0;
                if (*v == '"') { for (const char *x = v; x < ve; x++) if (*x == '\\') { a.esc = 1; break; } }
                if (c.n_args >= MAX_ARGS) return 1;
                if (push_arg(P, a) < 0) return -1;
                c.n_args++;
                p = ve;
                if (p < end && *p == '}') { p++; break; }
                if (p >= end || *p != ',') return 1;
                p++;
            }
        }
        if (p >= end || *p != '}') return 1;
        p++;
        if (r->n_calls >= MAX_CALLS) return 1;
        if (push_call(P, c) < 0) return -1;
        r->n_calls++;
        if (p < end && *p == ']') return p + 1 == end ? 0 : 1;
        if (p >= end || *p != ',') return 1;
        p++;
    }
}

static inline const char *row_calls(const Parsed *P, Py_ssize_t i, Py_ssize_t *n) { return col_get(&P->calls, i, n); }

/* ------------------------------------------------------------------ Kernel methods */

static void kernel_out_free(void *out);

static void kernel_dealloc(Kernel *self) {
    table_free(&self->texts);
    for (Py_ssize_t i = 0; i < self->n_tools; i++) tool_clear(TOOL(self, i));
    for (int c = 0; c < TOOL_CHUNKS; c++) free(self->tool_chunks[c]);
    str_clear(&self->head); str_clear(&self->mid); str_clear(&self->tail); str_clear(&self->no_call);
    str_clear(&self->whead); str_clear(&self->wtail); str_clear(&self->wsuffix);
    str_clear(&self->empty_list);
    kernel_out_free(self->out);
    table_free(&self->toks);
    free(self->arena.p);
    free(self->tok_start.p);
    free(self->tok_len.p);
    Py_XDECREF(self->bpe_obj);
    free(self->bpe_tmp.p);
    free(self->bpe_frag.p);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int kernel_init(Kernel *self, PyObject *args, PyObject *kw) {
    unsigned long long fk, pk, pool;
    double p;
    PyObject *head, *mid, *tail, *no_call, *empty;
    if (!PyArg_ParseTuple(args, "KKKdOOOOO", &fk, &pk, &pool, &p, &head, &mid, &tail, &no_call, &empty)) return -1;
    self->fn_key = fk;
    self->param_key = pk;
    self->pool_size = pool;
    self->p = p;
    if (str_set(&self->head, head) < 0 || str_set(&self->mid, mid) < 0 || str_set(&self->tail, tail) < 0 ||
        str_set(&self->no_call, no_call) < 0)
        return -1;
    if (str_set(&self->empty_list, empty) < 0) return -1;
    self->gen = 1;
    self->eos = -1;
    self->tok_limit = 1 << 20;
    return 0;
}

static PyObject *kernel_set_wrap(Kernel *self, PyObject *args) {
    PyObject *h, *t, *s;
    if (!PyArg_ParseTuple(args, "OOO", &h, &t, &s)) return NULL;
    str_clear(&self->whead); str_clear(&self->wtail); str_clear(&self->wsuffix);
    if (str_set(&self->whead, h) < 0 || str_set(&self->wtail, t) < 0 || str_set(&self->wsuffix, s) < 0) return NULL;
    Py_RETURN_NONE;
}

/* set_bpe(encoder, capsule): the compiled BPE (None: off) -- see BpeEncodeFn */
static PyObject *kernel_set_bpe(Kernel *self, PyObject *args) {
    PyObject *enc, *cap;
    if (!PyArg_ParseTuple(args, "OO", &enc, &cap)) return NULL;
    if (enc == Py_None) {
        Py_CLEAR(self->bpe_obj);
        self->bpe_encode = NULL;
        Py_RETURN_NONE;
    }
    BpeEncodeFn fn = (BpeEncodeFn)PyCapsule_GetPointer(cap, "hammer_core.data.compiled._fastbpe._C_API");
    if (!fn) return NULL;
    Py_INCREF(enc);
    Py_XSETREF(self->bpe_obj, enc);
    self->bpe_encode = fn;
    Py_RETURN_NONE;
}

static void tokens_clear(Kernel *K) {
    table_free(&K->toks);
    K->arena.len = K->tok_start.len = K->tok_len.len = 0;
    K->gen++;
}

/* set_tokens(eos id, max entries): enables the token cache */
static PyObject *kernel_set_tokens(Kernel *self, PyObject *args) {
    int eos;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "in", &eos, &limit)) return NULL;
    self->eos = eos;
    self->tok_limit = limit;
    tokens_clear(self);
    Py_RETURN_NONE;
}

/* add_tokens(texts: list of str, ids: list of bytes (int32, native order)) */
static PyObject *kernel_add_tokens(Kernel *self, PyObject *args) {
    PyObject *texts, *blobs;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &texts, &PyList_Type, &blobs)) return NULL;
    if (PyList_GET_SIZE(texts) != PyList_GET_SIZE(blobs)) { PyErr_SetString(PyExc_ValueError, "lengths"); return NULL; }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(texts); i++) {
        PyObject *t = PyList_GET_ITEM(texts, i), *b = PyList_GET_ITEM(blobs, i);
        Py_ssize_t n;
        const char *u = PyUnicode_AsUTF8AndSize(t, &n);
        if (!u) return NULL;
        if (!PyBytes_Check(b) || PyBytes_GET_SIZE(b) % 4) { PyErr_SetString(PyExc_TypeError, "ids: int32 bytes"); return NULL; }
        if (table_get(&self->toks, u, n) >= 0) continue;
        int32_t e = (int32_t)self->tok_start.len;
        Py_ssize_t k = PyBytes_GET_SIZE(b) / 4;
        if (ivec_push(&self->tok_start, (int32_t)self->arena.len) < 0 || ivec_push(&self->tok_len, (int32_t)k) < 0) return NULL;
        const int32_t *ids = (const int32_t *)PyBytes_AS_STRING(b);
        for (Py_ssize_t j = 0; j < k; j++) if (ivec_push(&self->arena, ids[j]) < 0) return NULL;
        if (table_put(&self->toks, u, n, e) < 0) return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *kernel_token_entries(Kernel *self, PyObject *noargs) { return PyLong_FromSsize_t(self->tok_start.len); }

/* trim_tokens(): empty the token cache when it holds more than its limit (a cache: speed only) */
static PyObject *kernel_trim_tokens(Kernel *self, PyObject *noargs) {
    if (self->tok_start.len > self->tok_limit) tokens_clear(self);
    Py_RETURN_NONE;
}

/* prompts.SAFE_CUT = (?<=\S)(?= ): before a space that follows a non-whitespace character */
static int safe_cut_at(const char *s, Py_ssize_t i) {
    if (i <= 0 || s[i] != ' ') return 0;
    unsigned char c = (unsigned char)s[i - 1];
    if (c < 0x80) return !Py_UNICODE_ISSPACE(c);
    Py_ssize_t k = i - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    unsigned char b0 = (unsigned char)s[k];
    Py_UCS4 cp;
    Py_ssize_t len = i - k;
    if ((b0 & 0xE0) == 0xC0 && len == 2) cp = ((Py_UCS4)(b0 & 0x1F) << 6) | (s[k + 1] & 0x3F);
    else if ((b0 & 0xF0) == 0xE0 && len == 3) cp = ((Py_UCS4)(b0 & 0x0F) << 12) | ((Py_UCS4)(s[k + 1] & 0x3F) << 6) | (s[k + 2] & 0x3F);
    else if ((b0 & 0xF8) == 0xF0 && len == 4)
        cp = ((Py_UCS4)(b0 & 0x07) << 18) | ((Py_UCS4)(s[k + 1] & 0x3F) << 12) | ((Py_UCS4)(s[k + 2] & 0x3F) << 6) | (s[k + 3] & 0x3F);
    else return 1;  /* not valid UTF-8: cannot happen for str */
    return !Py_UNICODE_ISSPACE(cp);
}

/* split_misses(fragments) -> the chunks (pieces between safe cuts) of fragments that are not
 * cached yet, each once */
static PyObject *kernel_split_misses(Kernel *self, PyObject *args) {
    PyObject *frags;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &frags)) return NULL;
    PyObject *out = PyList_New(0);
    Table seen = {0};
    if (!out) return NULL;
    for (Py_ssize_t f = 0; f < PyList_GET_SIZE(frags); f++) {
        Py_ssize_t n;
        const char *u = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(frags, f), &n);
        if (!u) goto fail;
        if (table_get(&self->toks, u, n) >= 0) continue;
        Py_ssize_t a = 0;
        for (Py_ssize_t i = n ? 1 : 0; i <= n; i++) {  /* "" is one (empty) chunk */
            if (i < n && !safe_cut_at(u, i)) continue;
            if (table_get(&self->toks, u + a, i - a) < 0 && table_get(&seen, u + a, i - a) == -2) {
                if (table_put(&seen, u + a, i - a, 0) < 0) goto fail;
                PyObject *c = PyUnicode_DecodeUTF8(u + a, i - a, "strict");
                if (!c || PyList_Append(out, c) < 0) { Py_XDECREF(c); goto fail; }
                Py_DECREF(c);
            }
            a = i;
        }
    }
    table_free(&seen);
    return out;
fail:
    table_free(&seen);
    Py_DECREF(out);
    return NULL;
}

static int tok_add_entry(Kernel *K, const char *u, Py_ssize_t n, const int32_t *ids, Py_ssize_t k) {
    int32_t e = (int32_t)K->tok_start.len;
    if (ivec_push(&K->tok_start, (int32_t)K->arena.len) < 0 || ivec_push(&K->tok_len, (int32_t)k) < 0) return -1;
    for (Py_ssize_t j = 0; j < k; j++) if (ivec_push(&K->arena, ids[j]) < 0) return -1;
    return table_put(&K->toks, u, n, e);
}

/* add_chunks(chunks, ids int32 bytes (all chunks' ids in order), counts int32 bytes) */
static PyObject *kernel_add_chunks(Kernel *self, PyObject *args) {
    PyObject *chunks;
    Py_buffer ids, counts;
    if (!PyArg_ParseTuple(args, "O!y*y*", &PyList_Type, &chunks, &ids, &counts)) return NULL;
    Py_ssize_t m = PyList_GET_SIZE(chunks), pos = 0, total = ids.len / 4;
    const int32_t *iv = (const int32_t *)ids.buf, *cv = (const int32_t *)counts.buf;
    PyObject *ret = NULL;
    if (counts.len != m * 4) { PyErr_SetString(PyExc_ValueError, "counts: one int32 a chunk"); goto done; }
    for (Py_ssize_t c = 0; c < m; c++) {
        Py_ssize_t n;
        const char *u = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(chunks, c), &n);
        if (!u) goto done;
        if (cv[c] < 0 || pos + cv[c] > total) { PyErr_SetString(PyExc_ValueError, "ids shorter than counts"); goto done; }
        if (table_get(&self->toks, u, n) < 0 && tok_add_entry(self, u, n, iv + pos, cv[c]) < 0) goto done;
        pos += cv[c];
    }
    if (pos != total) { PyErr_SetString(PyExc_ValueError, "ids longer than counts"); goto done; }
    ret = Py_None;
    Py_INCREF(ret);
done:
    PyBuffer_Release(&ids);
    PyBuffer_Release(&counts);
    return ret;
}

/* join_misses(fragments): cache each fragment as the concatenation of its (cached) chunks */
static PyObject *kernel_join_misses(Kernel *self, PyObject *args) {
    PyObject *frags;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &frags)) return NULL;
    IVec tmp = {0};
    for (Py_ssize_t f = 0; f < PyList_GET_SIZE(frags); f++) {
        Py_ssize_t n;
        const char *u = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(frags, f), &n);
        if (!u) goto fail;
        if (table_get(&self->toks, u, n) >= 0) continue;
        tmp.len = 0;
        Py_ssize_t a = 0;
        for (Py_ssize_t i = 1; i <= n; i++) {
            if (i < n && !safe_cut_at(u, i)) continue;
            int32_t e = table_get(&self->toks, u + a, i - a);
            if (e < 0) { PyErr_SetString(PyExc_RuntimeError, "a chunk of a fragment is not cached"); goto fail; }
            for (int32_t j = 0; j < self->tok_len.p[e]; j++)
                if (ivec_push(&tmp, self->arena.p[self->tok_start.p[e] + j]) < 0) goto fail;
            a = i;
        }
        if (n == 0) continue;  /* "" has no chunks: cached as no ids by add_chunks if asked */
        if (tok_add_entry(self, u, n, tmp.p, tmp.len) < 0) goto fail;
    }
    free(tmp.p);
    Py_RETURN_NONE;
fail:
    free(tmp.p);
    return NULL;
}

/* add_tool(text, name_esc, name_id, norm_id, sig_id, params_esc, (canon lits, slots),
 *          [(lits, slots)] * 4, [tuple of str] * 4, [(param index, str(default))]) -> id */
static PyObject *kernel_add_tool(Kernel *self, PyObject *args) {
    PyObject *text, *name_esc, *params, *canon, *shown, *plain, *defaults;
    int name_id, norm_id, sig_id;
    if (!PyArg_ParseTuple(args, "UUiiiOOOOO", &text, &name_esc, &name_id, &norm_id, &sig_id, &params, &canon,
                          &shown, &plain, &defaults))
        return NULL;
    Py_ssize_t tn;
    const char *ts = PyUnicode_AsUTF8AndSize(text, &tn);
    if (!ts) return NULL;
    Py_ssize_t chunk = self->n_tools >> TOOL_CHUNK_BITS;
    if (chunk >= TOOL_CHUNKS) { PyErr_SetString(PyExc_OverflowError, "too many tools for the kernel"); return NULL; }
    if (!self->tool_chunks[chunk]) {
        self->tool_chunks[chunk] = malloc(sizeof(Tool) << TOOL_CHUNK_BITS);
        if (!self->tool_chunks[chunk]) return PyErr_NoMemory();
    }
    Tool *t = TOOL(self, self->n_tools);
    memset(t, 0, sizeof(*t));
    PyObject *pf = NULL, *df = NULL;
    if (str_set(&t->name_esc, name_esc) < 0) goto fail;
    t->name_id = name_id;
    t->norm_id = norm_id;
    t->sig_id = sig_id;
    pf = PySequence_Fast(params, "params");
    if (!pf) goto fail;
    t->n_params = (int)PySequence_Fast_GET_SIZE(pf);
    t->params_esc = calloc((size_t)(t->n_params + 1), sizeof(Str));
    if (!t->params_esc) { PyErr_NoMemory(); goto fail; }
    for (int i = 0; i < t->n_params; i++)
        if (str_set(&t->params_esc[i], PySequence_Fast_GET_ITEM(pf, i)) < 0) goto fail;
    int n_names = t->n_params + 1;
    PyObject *cl, *cs;
    if (!PyArg_ParseTuple(canon, "OO", &cl, &cs) || tmpl_set(&t->canon, cl, cs, n_names) < 0) goto fail;
    if (!PySequence_Check(shown) || PySequence_Size(shown) != 4 || !PySequence_Check(plain) ||
        PySequence_Size(plain) != 4) {
        PyErr_SetString(PyExc_ValueError, "shown and plain: 4 positions each");
        goto fail;
    }
    for (int pos = 0; pos < 4; pos++) {
        PyObject *item = PySequence_GetItem(shown, pos);
        if (!item) goto fail;
        int bad = !PyArg_ParseTuple(item, "OO", &cl, &cs) || tmpl_set(&t->shown[pos], cl, cs, n_names) < 0;
        Py_DECREF(item);
        if (bad) goto fail;
        item = PySequence_GetItem(plain, pos);
        if (!item) goto fail;
        if (!PyTuple_Check(item)) { Py_DECREF(item); PyErr_SetString(PyExc_TypeError, "plain: tuples"); goto fail; }
        t->plain[pos] = item;  /* owned */
        t->n_plain[pos] = (int)PyTuple_GET_SIZE(item);
        t->plain_utf8[pos] = calloc((size_t)(t->n_plain[pos] + 1), sizeof(Str));
        if (!t->plain_utf8[pos]) { PyErr_NoMemory(); goto fail; }
        for (int k = 0; k < t->n_plain[pos]; k++) {
            if (str_set(&t->plain_utf8[pos][k], PyTuple_GET_ITEM(item, k)) < 0) goto fail;
        }
    }
    df = PySequence_Fast(defaults, "defaults");
    if (!df) goto fail;
    t->n_defaults = (int)PySequence_Fast_GET_SIZE(df);
    t->def_pi = calloc((size_t)(t->n_defaults + 1), sizeof(int));
    t->def_old = calloc((size_t)(t->n_defaults + 1), sizeof(Str));
    if (!t->def_pi || !t->def_old) { PyErr_NoMemory(); goto fail; }
    for (int i = 0; i < t->n_defaults; i++) {
        PyObject *o;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(df, i), "iU", &t->def_pi[i], &o)) goto fail;
        if (t->def_pi[i] < 0 || t->def_pi[i] >= t->n_params) { PyErr_SetString(PyExc_ValueError, "default index"); goto fail; }
        if (str_set(&t->def_old[i], o) < 0) goto fail;
    }
    if (table_put(&self->texts, ts, tn, (int32_t)self->n_tools) < 0) goto fail;
    Py_DECREF(pf);
    Py_DECREF(df);
    return PyLong_FromSsize_t(self->n_tools++);
fail:
    Py_XDECREF(pf);
    Py_XDECREF(df);
    tool_clear(t);
    return NULL;
}

static PyObject *kernel_add_bad(Kernel *self, PyObject *args) {
    PyObject *text;
    if (!PyArg_ParseTuple(args, "U", &text)) return NULL;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    if (!s || table_put(&self->texts, s, n, -1) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *kernel_n_tools(Kernel *self, PyObject *noargs) { return PyLong_FromSsize_t(self->n_tools); }

/* Eligibility (hammer_core.data.irrelevance.eligibility) of a parsed row: plain | hn << 1 | gold << 2 */
static int64_t row_eligibility(const Kernel *K, const Parsed *P, const Row *r, const char *cs) {
    if (!r->n_calls) return 0;
    const int32_t *ids = P->tool_ids.p + r->tool0;
    uint64_t gold = 0;
    int n_gold = 0;
    for (int i = 0; i < r->n_tools; i++) {
        const Tool *t = TOOL(K, ids[i]);
        for (int c = 0; c < r->n_calls; c++) {
            const Call *call = &P->calls_v[r->call0 + c];
            if (call->name_len == t->name_esc.n && !memcmp(cs + call->name_off, t->name_esc.s, (size_t)call->name_len)) {
                gold |= 1ULL << i;
                n_gold++;
                break;
            }
        }
    }
    int64_t g = (int64_t)(gold << 2);
    int hn = gold != 0;
    if (n_gold == r->n_tools) return (hn << 1) | g;
    for (int i = 0; i < r->n_tools; i++) {
        if (gold >> i & 1) continue;
        const Tool *t = TOOL(K, ids[i]);
        for (int j = 0; j < r->n_tools; j++) {
            if (!(gold >> j & 1)) continue;
            const Tool *u = TOOL(K, ids[j]);
            if (t->norm_id == u->norm_id || t->sig_id == u->sig_id) return 0;
        }
    }
    return 1 | (hn << 1) | g;
}

/* parse(tools col, calls col, msg offsets (buf, offset), roles col, contents col, n)
 *   -> (Parsed, unknown tool pieces: list of str) */
/* the separator of a canonical tools list's pieces at or after p: the '}' of },{"name": (it
 * closes this piece; the next one starts at its '{', 2 bytes on), or NULL for the last piece */
static const char *next_sep(const char *p, const char *iend) {
    static const char SEP[] = "},{\"name\":";
    while (p + 10 <= iend) {
        p = memchr(p, '}', (size_t)(iend - p));
        if (!p || p + 10 > iend) return NULL;
        if (!memcmp(p, SEP, 10)) return p;
        p++;
    }
    return NULL;
}

static PyObject *kernel_parse(Kernel *self, PyObject *args) {
    PyObject *tspec, *cspec, *mbuf, *rspec, *xspec;
    Py_ssize_t moff, n;
    if (!PyArg_ParseTuple(args, "OOOnOOn", &tspec, &cspec, &mbuf, &moff, &rspec, &xspec, &n)) return NULL;
    Parsed *P = PyObject_New(Parsed, &ParsedType);
    if (!P) return NULL;
    memset((char *)P + sizeof(PyObject), 0, sizeof(Parsed) - sizeof(PyObject));
    Py_INCREF(self);
    P->kernel = self;
    P->n = n;
    PyObject *unknown = NULL, *seen = NULL;
    Buf piece = {0};
    if (col_init(&P->tools, tspec) < 0 || col_init(&P->calls, cspec) < 0 || col_init(&P->roles, rspec) < 0 ||
        col_init(&P->contents, xspec) < 0 || PyObject_GetBuffer(mbuf, &P->msg_off, PyBUF_SIMPLE) < 0)
        goto fail;
    P->msg_offset = moff;
    if (P->tools.n < n || P->calls.n < n || (Py_ssize_t)P->msg_off.len < (moff + n + 1) * 4) {
        PyErr_SetString(PyExc_ValueError, "columns shorter than n");
        goto fail;
    }
    P->rows = calloc((size_t)(n ? n : 1), sizeof(Row));
    unknown = PyList_New(0);
    seen = PySet_New(NULL);
    if (!P->rows || !unknown || !seen) { if (!P->rows) PyErr_NoMemory(); goto fail; }
    const int32_t *mo = (const int32_t *)P->msg_off.buf + moff;
    for (Py_ssize_t i = 0; i < n; i++) {
        Row *r = &P->rows[i];
        r->status = ST_OK;
        r->q_sys = -1;
        r->tool0 = (int32_t)P->tool_ids.len;
        /* messages: [user] or [system, user] */
        int32_t m0 = mo[i], m1 = mo[i + 1];
        Py_ssize_t rn;
        const char *rs;
        if (m0 < 0 || m1 < m0 || m1 > P->roles.n || m1 > P->contents.n) {
            r->status = ST_PYTHON;
        } else if (m1 - m0 == 1) {
            rs = col_get(&P->roles, m0, &rn);
            if (rn != 4 || memcmp(rs, "user", 4)) r->status = ST_PYTHON;
            r->q_user = m0;
        } else if (m1 - m0 == 2) {
            rs = col_get(&P->roles, m0, &rn);
            if (rn != 6 || memcmp(rs, "system", 6)) r->status = ST_PYTHON;
            rs = col_get(&P->roles, m0 + 1, &rn);
            if (rn != 4 || memcmp(rs, "user", 4)) r->status = ST_PYTHON;
            r->q_sys = m0;
            r->q_user = m0 + 1;
        } else {
            r->status = ST_PYTHON;
        }
        if (r->status != ST_OK) continue;
        /* tools: cut at },{"name": and look every piece up */
        Py_ssize_t tn;
        const char *ts = col_get(&P->tools, i, &tn);
        if (tn < 2 || ts[0] != '[' || ts[tn - 1] != ']') { r->status = ST_PYTHON; continue; }
        const char *inner = ts + 1, *iend = ts + tn - 1;
        int missing = 0;
        if (inner < iend) {
            const char *p = inner;
            int first = 1;
            for (;;) {
                const char *hit = next_sep(p, iend);
                const char *pe = hit ? hit : iend;
                piece.len = 0;
                if (!first && ADDL(&piece, "{\"name\":") < 0) goto fail;
                if (buf_add(&piece, p, pe - p) < 0) goto fail;
                if (hit && buf_addc(&piece, '}') < 0) goto fail;
                int32_t id = table_get(&self->texts, piece.p, piece.len);
                if (id == -1) { r->status = ST_PYTHON; break; }
                if (id == -2) {
                    missing = 1;
                    PyObject *u = PyUnicode_DecodeUTF8(piece.p, piece.len, "strict");
                    if (!u) goto fail;
                    int has = PySet_Contains(seen, u);
                    if (has < 0 || (!has && (PySet_Add(seen, u) < 0 || PyList_Append(unknown, u) < 0))) {
                        Py_DECREF(u);
                        goto fail;
                    }
                    Py_DECREF(u);
                } else if (ivec_push(&P->tool_ids, id) < 0) {
                    goto fail;
                }
                if (!hit) break;
                p = hit + 10;
                first = 0;
            }
        }
        if (r->status != ST_OK) { P->tool_ids.len = r->tool0; continue; }
        if (missing) { r->status = ST_PYTHON; P->tool_ids.len = r->tool0; continue; }
        r->n_tools = (int32_t)(P->tool_ids.len - r->tool0);
        int names = 0;
        for (int k = 0; k < r->n_tools; k++) names += 1 + TOOL(self, P->tool_ids.p[r->tool0 + k])->n_params;
        Py_ssize_t cn;
        const char *cs = row_calls(P, i, &cn);
        Py_ssize_t a0 = P->n_args_v, c0 = P->n_calls_v;
        int rc = r->n_tools > MAX_TOOLS || names > MAX_NAMES ? 1 : parse_calls(P, r, cs, cn);
        if (rc < 0) goto fail;
        if (rc) {  /* not handled: this row's tools and calls are dropped again */
            r->status = ST_PYTHON;
            P->n_args_v = a0;
            P->n_calls_v = c0;
            r->n_calls = 0;
            P->tool_ids.len = r->tool0;
            r->n_tools = 0;
            continue;
        }
        r->elig = row_eligibility(self, P, r, cs);
    }
    buf_free(&piece);
    Py_DECREF(seen);
    PyObject *out = Py_BuildValue("(NN)", (PyObject *)P, unknown);
    return out;
fail:
    buf_free(&piece);
    Py_XDECREF(unknown);
    Py_XDECREF(seen);
    Py_DECREF(P);
    return NULL;
}

/* ------------------------------------------------------------------ Parsed accessors */

/* (status bytes, elig int64 bytes, tool id counts int32 bytes, tool ids int32 bytes, no_call uint8 bytes) */
static PyObject *parsed_info(Parsed *P, PyObject *noargs) {
    Py_ssize_t n = P->n;
    PyObject *st = PyBytes_FromStringAndSize(NULL, n);
    PyObject *el = PyBytes_FromStringAndSize(NULL, n * 8);
    PyObject *nt = PyBytes_FromStringAndSize(NULL, n * 4);
    PyObject *nc = PyBytes_FromStringAndSize(NULL, n);
    PyObject *ids = PyBytes_FromStringAndSize((const char *)P->tool_ids.p, P->tool_ids.len * 4);
    if (!st || !el || !nt || !nc || !ids) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        const Row *r = &P->rows[i];
        PyBytes_AS_STRING(st)[i] = (char)r->status;
        memcpy(PyBytes_AS_STRING(el) + 8 * i, &r->elig, 8);
        int32_t k = r->status == ST_OK ? r->n_tools : 0;
        memcpy(PyBytes_AS_STRING(nt) + 4 * i, &k, 4);
        PyBytes_AS_STRING(nc)[i] = (char)(r->status == ST_OK && r->n_calls == 0);
    }
    return Py_BuildValue("(NNNNN)", st, el, nt, ids, nc);
fail:
    Py_XDECREF(st); Py_XDECREF(el); Py_XDECREF(nt); Py_XDECREF(nc); Py_XDECREF(ids);
    return NULL;
}

/* the tools JSON of the irrelevance rows made from rows (int64 bytes) of this block: each row's
 * tools list without its gold tools (irrelevance.synthesize_tools, no replacements), cut
 * from the row's own text -> (int32 offsets bytes, data bytes) */
static PyObject *parsed_strip_gold(Parsed *P, PyObject *args) {
    Py_buffer rb;
    if (!PyArg_ParseTuple(args, "y*", &rb)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = rb.len / 8;
    Buf data = {0};
    IVec offs = {0};
    if (ivec_push(&offs, 0) < 0) goto done;
    for (Py_ssize_t j = 0; j < n; j++) {
        int64_t i = ((const int64_t *)rb.buf)[j];
        if (i < 0 || i >= P->n || P->rows[i].status != ST_OK || !(P->rows[i].elig >> 2)) {
            PyErr_Format(PyExc_ValueError, "row %lld: not parsed by the kernel, or no gold tool", (long long)i);
            goto done;
        }
        uint64_t gold = (uint64_t)P->rows[i].elig >> 2;
        Py_ssize_t tn;
        const char *ts = col_get(&P->tools, i, &tn);
        const char *p = ts + 1, *iend = ts + tn - 1;
        int first = 1;
        if (buf_addc(&data, '[') < 0) goto done;
        for (int k = 0; p < iend; k++) {
            const char *hit = next_sep(p, iend);
            const char *pe = hit ? hit + 1 : iend;
            if (!(k < 62 && (gold >> k & 1))) {
                if ((!first && buf_addc(&data, ',') < 0) || buf_add(&data, p, pe - p) < 0) goto done;
                first = 0;
            }
            if (!hit) break;
            p = hit + 2;
        }
        if (buf_addc(&data, ']') < 0) goto done;
        if (data.len > INT32_MAX) { PyErr_SetString(PyExc_OverflowError, "a block's column exceeds 2 GB"); goto done; }
        if (ivec_push(&offs, (int32_t)data.len) < 0) goto done;
    }
    result = Py_BuildValue("(y#y#)", (const char *)offs.p, offs.len * 4, data.p ? data.p : "", data.len);
done:
    PyBuffer_Release(&rb);
    buf_free(&data);
    free(offs.p);
    return result;
}

/* ------------------------------------------------------------------ masking a row */

typedef struct {
    int n;                      /* tools (after dedup) */
    int tool[MAX_TOOLS];        /* tool ids */
    int name0[MAX_TOOLS];       /* index of the tool's function name in names[] */
    int order[MAX_TOOLS];       /* shown order */
    int by_call[MAX_CALLS];     /* tool index of each call */
    int n_names;
    char names[MAX_NAMES][16];
    int name_len[MAX_NAMES];
} RowMask;

static inline void gen_draw(const Kernel *K, int fn, uint64_t draw, char *out, int *len) {
    uint64_t idx = K->pool_size ? draw % K->pool_size : draw;
    if (fn) *len = gen_name(K->fn_key, 5, 15, idx, out);
    else *len = gen_name(K->param_key, 4, 10, idx, out);
}

/* masking._unique over names[first .. first + count) (by their positions in the list) */
static void make_unique(const Kernel *K, RowMask *m, const int *pos, int count, int fn, uint64_t key, int slot0) {
    int dup = 0;
    for (int a = 0; a < count && !dup; a++)
        for (int b = 0; b < a; b++)
            if (m->name_len[pos[a]] == m->name_len[pos[b]] &&
                !memcmp(m->names[pos[a]], m->names[pos[b]], (size_t)m->name_len[pos[a]])) { dup = 1; break; }
    if (!dup) return;
    for (int k = 0; k < count; k++) {
        uint64_t attempt = 0;
        for (;;) {
            int clash = 0;
            for (int b = 0; b < k; b++)
                if (m->name_len[pos[k]] == m->name_len[pos[b]] &&
                    !memcmp(m->names[pos[k]], m->names[pos[b]], (size_t)m->name_len[pos[k]])) { clash = 1; break; }
            if (!clash) break;
            uint64_t draw = mix64(key, REDRAW_BASE + 4096ULL * (uint64_t)(slot0 + k) + attempt);
            gen_draw(K, fn, draw, m->names[pos[k]], &m->name_len[pos[k]]);
            attempt++;
        }
    }
}

/* dedup by name (first kept) when the split is masked */
static void row_tools(const Kernel *K, const Parsed *P, const Row *r, int dedup, RowMask *m) {
    const int32_t *ids = P->tool_ids.p + r->tool0;
    m->n = 0;
    for (int i = 0; i < r->n_tools; i++) {
        int id = ids[i], keep = 1;
        if (dedup)
            for (int j = 0; j < m->n; j++)
                if (TOOL(K, m->tool[j])->name_id == TOOL(K, id)->name_id) { keep = 0; break; }
        if (keep) m->tool[m->n++] = id;
    }
}

static inline uint64_t stream_word(uint64_t key, int j) { return mix64(key, (uint64_t)j); }

static int is_masked(const Kernel *K, uint64_t key) {
    uint64_t w = stream_word(key, 0);
    return (double)(w >> 11) * (1.0 / 9007199254740992.0) < K->p;
}

/* does a masked row need Python? (a call to an unknown function or argument, or a gold argument
 * equal to a default, which masking perturbs) -- also resolves by_call */
static int masked_needs_python(const Kernel *K, const Parsed *P, const Row *r, const char *cs, RowMask *m) {
    for (int c = 0; c < r->n_calls; c++) {
        const Call *call = &P->calls_v[r->call0 + c];
        int found = -1;
        for (int i = 0; i < m->n; i++) {
            const Tool *t = TOOL(K, m->tool[i]);
            if (t->name_esc.n == call->name_len && !memcmp(t->name_esc.s, cs + call->name_off, (size_t)call->name_len)) {
                found = i;
                break;
            }
        }
        if (found < 0) return 1;
        m->by_call[c] = found;
        const Tool *t = TOOL(K, m->tool[found]);
        for (int a = 0; a < call->n_args; a++) {
            const Arg *arg = &P->args_v[call->arg0 + a];
            int ok = 0;
            for (int q = 0; q < t->n_params; q++)
                if (t->params_esc[q].n == arg->key_len && !memcmp(t->params_esc[q].s, cs + arg->key_off, (size_t)arg->key_len)) {
                    ok = 1;
                    break;
                }
            if (!ok) return 1;
        }
        for (int d = 0; d < t->n_defaults; d++) {
            const Str *pn = &t->params_esc[t->def_pi[d]];
            const Str *old = &t->def_old[d];
            for (int a = 0; a < call->n_args; a++) {
                const Arg *arg = &P->args_v[call->arg0 + a];
                if (arg->key_len != pn->n || memcmp(cs + arg->key_off, pn->s, (size_t)pn->n)) continue;
                const char *v = cs + arg->val_off;
                Py_ssize_t vn = arg->val_len;
                switch (arg->kind) {
                case '"':
                    if (arg->esc) return 1;
                    if (vn - 2 == old->n && !memcmp(v + 1, old->s, (size_t)old->n)) return 1;
                    break;
                case 't':
                    if (old->n == 4 && !memcmp(old->s, "True", 4)) return 1;
                    break;
                case 'f':
                    if (old->n == 5 && !memcmp(old->s, "False", 5)) return 1;
                    break;
                case 'n':
                    if (old->n == 4 && !memcmp(old->s, "None", 4)) return 1;
                    break;
                case '[': case '{':
                    if (old->n && (old->s[0] == '[' || old->s[0] == '{')) return 1;
                    break;
                default:  /* a number: its text is str(value) */
                    if (vn == old->n && !memcmp(v, old->s, (size_t)vn)) return 1;
                }
            }
        }
    }
    return 0;
}

/* the names and shown order of a masked row (Masker.mask without the defaults) */
static void draw_row_names(const Kernel *K, uint64_t key, RowMask *m) {
    int n = m->n;
    uint64_t sk[MAX_TOOLS];
    for (int i = 0; i < n; i++) { sk[i] = stream_word(key, 1 + i); m->order[i] = i; }
    for (int i = 1; i < n; i++) {  /* stable insertion sort by shuffle key */
        int x = m->order[i], j = i - 1;
        while (j >= 0 && sk[m->order[j]] > sk[x]) { m->order[j + 1] = m->order[j]; j--; }
        m->order[j + 1] = x;
    }
    int pos = 1 + n, nn = 0;
    for (int i = 0; i < n; i++) {
        const Tool *t = TOOL(K, m->tool[i]);
        m->name0[i] = nn;
        gen_draw(K, 1, stream_word(key, pos), m->names[nn], &m->name_len[nn]);
        nn++;
        for (int q = 0; q < t->n_params; q++) {
            gen_draw(K, 0, stream_word(key, pos + 1 + q), m->names[nn], &m->name_len[nn]);
            nn++;
        }
        pos += 1 + t->n_params;
    }
    m->n_names = nn;
    int fpos[MAX_TOOLS];
    for (int i = 0; i < n; i++) fpos[i] = m->name0[i];
    make_unique(K, m, fpos, n, 1, key, 0);
    int slot = 0;
    for (int i = 0; i < n; i++) {
        const Tool *t = TOOL(K, m->tool[i]);
        int k = t->n_params;
        if (k) {
            int pp[MAX_NAMES];
            for (int q = 0; q < k; q++) pp[q] = m->name0[i] + 1 + q;
            make_unique(K, m, pp, k, 0, key, n + slot);
        }
        slot += k;
    }
}

/* ------------------------------------------------------------------ output assembly */

typedef struct {
    Buf data[5];     /* id, variant, parent, tools, calls */
    IVec offs[5];
    Buf valid;       /* parent validity (one byte a row; packed at the end) */
    IVec src;
    Buf scratch;     /* render-only: the prompt and the answer */
    Py_ssize_t rendered;
    Py_ssize_t no_call;
    PyObject *prompts, *targets;   /* fragment mode: lists of lists of str */
    IVec tok_ids, tok_off, n_prompt; /* token mode */
    Table miss_set;
    Buf miss_data;       /* token mode: the fragments missing from the cache (collected without the GIL) */
    IVec miss_offs;
    Py_ssize_t hint[5], tok_hint; /* the sizes of the last outputs handed over (reserved for the next) */
} Out;

static int out_row_end(Out *o) {
    for (int c = 0; c < 5; c++)
        if (ivec_push(&o->offs[c], (int32_t)o->data[c].len) < 0) return -1;
    return 0;
}

static void out_free(Out *o) {
    for (int c = 0; c < 5; c++) { buf_free(&o->data[c]); free(o->offs[c].p); }
    buf_free(&o->valid);
    free(o->src.p);
    buf_free(&o->scratch);
    Py_XDECREF(o->prompts);
    Py_XDECREF(o->targets);
    free(o->tok_ids.p);
    free(o->tok_off.p);
    free(o->n_prompt.p);
    table_free(&o->miss_set);
    buf_free(&o->miss_data);
    free(o->miss_offs.p);
    memset(o, 0, sizeof *o);
}

static void kernel_out_free(void *out) {
    if (out) { out_free((Out *)out); free(out); }
}

/* end of a call: the Python objects go, the buffers stay (emptied) for the next call, unless huge */
static void out_reset(Out *o) {
    Py_CLEAR(o->prompts);
    Py_CLEAR(o->targets);
    table_free(&o->miss_set);
    o->miss_data.len = o->miss_offs.len = 0;
    Py_ssize_t big = 0;
    for (int c = 0; c < 5; c++) big += o->data[c].cap;
    big += o->tok_ids.cap * 4;
    if (big > ((Py_ssize_t)1 << 30)) { out_free(o); return; }
    for (int c = 0; c < 5; c++) { o->data[c].len = 0; o->offs[c].len = 0; }
    o->valid.len = o->src.len = o->scratch.len = 0;
    o->tok_ids.len = o->tok_off.len = o->n_prompt.len = 0;
    o->rendered = o->no_call = 0;
}

static int tok_row_end(Out *o, const Kernel *K, Py_ssize_t start, Py_ssize_t prompt_end) {
    if (ivec_push(&o->tok_ids, K->eos) < 0) return -1;
    if (ivec_push(&o->n_prompt, (int32_t)(prompt_end - start)) < 0) return -1;
    if (o->tok_ids.len > INT32_MAX) { set_error(PyExc_OverflowError, "a block's tokens exceed 2**31"); return -1; }
    return ivec_push(&o->tok_off, (int32_t)o->tok_ids.len);
}

/* fragment sink: a list of str (fragment mode) or the scratch buffer (render-only) */
typedef struct {
    PyObject *list;   /* fragment mode: append str */
    Buf *buf;         /* render-only: append text */
    /* token mode: append the cached ids of each fragment; a miss is collected */
    Kernel *K;
    IVec *ids;
    Table *miss_set;
    Buf *miss_data;   /* the misses' text, back to back */
    IVec *miss_offs;  /* their end offsets */
} Sink;

static int tok_add_entry(Kernel *K, const char *u, Py_ssize_t n, const int32_t *ids, Py_ssize_t k);
static int safe_cut_at(const char *s, Py_ssize_t i);

/* A fragment missing from the token cache, tokenized here with the compiled BPE the way
 * FragmentTokenizer does it (cut at the safe cuts, each chunk cached, the fragment cached as the
 * concatenation of its chunks' ids): its entry, -1 when the BPE does not handle one of its
 * chunks (then Python tokenizes it), -2 on error. */
static int32_t tok_fill(Kernel *K, const char *u, Py_ssize_t n) {
    K->bpe_frag.len = 0;
    Py_ssize_t a = 0, chunks = 0;
    int32_t last = -1;
    for (Py_ssize_t i = n ? 1 : 0; i <= n; i++) {  /* "" is one (empty) chunk */
        if (i < n && !safe_cut_at(u, i)) continue;
        int32_t e = table_get(&K->toks, u + a, i - a);
        if (e < 0) {
            K->bpe_tmp.len = 0;
            if (ivec_reserve(&K->bpe_tmp, i - a) < 0) return -2;  /* ids <= bytes */
            Py_ssize_t k = K->bpe_encode(K->bpe_obj, u + a, i - a, K->bpe_tmp.p);
            if (k == -1) return -1;
            if (k < 0) return -2;
            e = (int32_t)K->tok_start.len;
            if (tok_add_entry(K, u + a, i - a, K->bpe_tmp.p, k) < 0) return -2;
        }
        int32_t k = K->tok_len.p[e];
        if (ivec_reserve(&K->bpe_frag, k) < 0) return -2;
        memcpy(K->bpe_frag.p + K->bpe_frag.len, K->arena.p + K->tok_start.p[e], (size_t)k * sizeof(int32_t));
        K->bpe_frag.len += k;
        last = e;
        chunks++;
        a = i;
    }
    if (chunks == 1) return last;  /* the fragment is its only chunk */
    int32_t e = (int32_t)K->tok_start.len;
    if (tok_add_entry(K, u, n, K->bpe_frag.p, K->bpe_frag.len) < 0) return -2;
    return e;
}

static int sink_tok_entry(Sink *s, int32_t e);

#define BPE_DIRECT_MAX 32  /* shorter single-chunk misses (masked names: random, never seen again) are
                             tokenized straight into the row, not cached */

/* the BPE ids of a one-chunk text straight into the row: 0, 1 when the BPE does not handle it, -1 */
static int sink_bpe_direct(Sink *s, const char *p, Py_ssize_t n) {
    Kernel *K = s->K;
    IVec *v = s->ids;
    if (ivec_reserve(v, n) < 0) return -1;  /* ids <= bytes */
    Py_ssize_t k = K->bpe_encode(K->bpe_obj, p, n, v->p + v->len);
    if (k >= 0) { v->len += k; return 0; }
    return k == -2 ? -1 : 1;
}

static int sink_tok_miss(Sink *s, const char *p, Py_ssize_t n) {
    Kernel *K = s->K;
    if (K->bpe_encode && n > 0 && n <= BPE_DIRECT_MAX) {
        int cut = 0;
        for (Py_ssize_t i = 1; i < n && !cut; i++) cut = safe_cut_at(p, i);
        if (!cut) {
            int rc = sink_bpe_direct(s, p, n);
            if (rc <= 0) return rc;
        }
    }
    if (K->bpe_encode) {
        int32_t e = tok_fill(s->K, p, n);
        if (e >= 0) return sink_tok_entry(s, e);
        if (e == -2) return -1;
    }
    if (table_get(s->miss_set, p, n) != -2) return 0;
    if (table_put(s->miss_set, p, n, 0) < 0 || buf_add(s->miss_data, p, n) < 0) return -1;
    return ivec_push(s->miss_offs, (int32_t)s->miss_data->len);
}

static int sink_tok_entry(Sink *s, int32_t e) {
    const Kernel *K = s->K;
    const int32_t *ids = K->arena.p + K->tok_start.p[e];
    int32_t k = K->tok_len.p[e];
    IVec *v = s->ids;
    if (ivec_reserve(v, k) < 0) return -1;
    memcpy(v->p + v->len, ids, (size_t)k * sizeof(int32_t));
    v->len += k;
    return 0;
}

static int sink_tok_bytes(Sink *s, const char *p, Py_ssize_t n) {
    int32_t e = table_get(&s->K->toks, p, n);
    if (e < 0) return sink_tok_miss(s, p, n);
    return sink_tok_entry(s, e);
}

static int sink_str(Sink *s, const Str *cx) {
    if (s->list) return PyList_Append(s->list, cx->obj);
    if (s->buf) return buf_add(s->buf, cx->s, cx->n);
    Str *x = (Str *)cx;  /* the cached entry is a cache */
    if (x->gen != s->K->gen || x->tok < 0) {
        int32_t e = table_get(&s->K->toks, x->s, x->n);
        if (e < 0) return sink_tok_miss(s, x->s, x->n);
        x->tok = e;
        x->gen = s->K->gen;
    }
    return sink_tok_entry(s, x->tok);
}

/* a masked name (random: never cached -- with the BPE it is tokenized straight into the row;
 * names are [A-Za-z0-9][A-Za-z0-9_.]*[A-Za-z0-9]: one chunk, no safe cut) */
static int sink_bytes(Sink *s, const char *p, Py_ssize_t n);

static int sink_name(Sink *s, const char *p, Py_ssize_t n) {
    if (!s->list && !s->buf && s->K->bpe_encode && n > 0) {
        int rc = sink_bpe_direct(s, p, n);
        if (rc <= 0) return rc;
    }
    return sink_bytes(s, p, n);
}

static int sink_bytes(Sink *s, const char *p, Py_ssize_t n) {
    if (!s->list && !s->buf) return sink_tok_bytes(s, p, n);
    if (s->list) {
        PyObject *o = PyUnicode_DecodeUTF8(p, n, "strict");
        if (!o) return -1;
        int rc = PyList_Append(s->list, o);
        Py_DECREF(o);
        return rc;
    }
    return buf_add(s->buf, p, n);
}

/* One UTF-8 sequence at s[0..n) decoded strictly as Python does (no overlong forms, no
 * surrogates, at most U+10FFFF): its length, 0 when invalid. */
static int utf8_one(const unsigned char *s, Py_ssize_t n, uint32_t *cp) {
    unsigned char c = s[0];
    int len;
    uint32_t v, min;
    if (c < 0x80) { *cp = c; return 1; }
    if (c >= 0xC2 && c <= 0xDF) { len = 2; v = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; v = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; v = c & 0x07; min = 0x10000; }
    else return 0;
    if (n < len) return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

/* Python's str.isspace for the first / last code point of UTF-8 text (1 -- "not a safe cut" --
 * for empty or undecodable text: the caller then takes the path that is right for any text).
 * No Python objects: emit runs this without the GIL. */
static int utf8_first_space(const char *s, Py_ssize_t n) {
    uint32_t cp;
    if (!n || !utf8_one((const unsigned char *)s, n, &cp)) return 1;
    return Py_UNICODE_ISSPACE(cp);
}

static int utf8_last_space(const char *s, Py_ssize_t n) {
    if (!n) return 1;
    Py_ssize_t k = n - 1;
    while (k > 0 && n - k < 4 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    uint32_t cp;
    if (utf8_one((const unsigned char *)s + k, n - k, &cp) != n - k) return 1;
    return Py_UNICODE_ISSPACE(cp);
}

/* the query block's fragments (prompts.prompt_fragments, after the tools) */
static int emit_query(const Kernel *K, const Parsed *P, const Row *r, Sink *s, int wrap, Buf *tmp) {
    Py_ssize_t un, sn = 0;
    const char *us = col_get(&P->contents, r->q_user, &un), *ss = NULL;
    tmp->len = 0;
    if (r->q_sys >= 0) {
        ss = col_get(&P->contents, r->q_sys, &sn);
        if (ADDL(tmp, "system: ") < 0 || buf_add(tmp, ss, sn) < 0 || ADDL(tmp, "\nuser: ") < 0) return -1;
    }
    if (buf_add(tmp, us, un) < 0) return -1;
    const char *q = tmp->p;
    Py_ssize_t qn = tmp->len;
    int safe = qn > 0 && !utf8_first_space(q, qn) && !utf8_last_space(q, qn);
    const Str *tail = wrap ? &K->wtail : &K->tail;
    if (safe) {
        if (sink_str(s, &K->mid) < 0) return -1;
        if (buf_addc(tmp, '\n') < 0) return -1;
        if (sink_bytes(s, tmp->p, tmp->len) < 0) return -1;
        return sink_str(s, tail);
    }
    /* MID + query + "\n" + TAIL (+ suffix when wrapped) */
    Buf all = {0};
    int rc = -1;
    if (buf_add(&all, K->mid.s, K->mid.n) < 0 || buf_add(&all, tmp->p, tmp->len) < 0 || buf_addc(&all, '\n') < 0 ||
        buf_add(&all, K->tail.s, K->tail.n) < 0)
        goto done;
    if (wrap && buf_add(&all, K->wsuffix.s, K->wsuffix.n) < 0) goto done;
    rc = sink_bytes(s, all.p, all.len);
done:
    buf_free(&all);
    return rc;
}

static int isolated(const char *s, Py_ssize_t n) {
    if (!n) return 0;
#define ALN(c) (((c) >= 'A' && (c) <= 'Z') || ((c) >= 'a' && (c) <= 'z') || ((c) >= '0' && (c) <= '9'))
    if (!ALN(s[0]) || !ALN(s[n - 1])) return 0;
    for (Py_ssize_t i = 1; i < n - 1; i++)
        if (!ALN(s[i]) && s[i] != '_' && s[i] != '.') return 0;
#undef ALN
    return 1;
}

/* compact JSON -> Python's default separators (", " and ": " outside strings) */
static int add_spaced(Buf *b, const char *v, Py_ssize_t n) {
    if (*v != '[' && *v != '{') return buf_add(b, v, n);
    int in_str = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = v[i];
        if (buf_addc(b, c) < 0) return -1;
        if (in_str) {
            if (c == '\\') { if (buf_addc(b, v[++i]) < 0) return -1; }
            else if (c == '"') in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == ',' || c == ':') {
            if (buf_addc(b, ' ') < 0) return -1;
        }
    }
    return 0;
}

/* target_fragments: masked rows (names[] new names) or plain rows (names from the calls) */
/* a name inside the answer: its own fragment (after the text gathered so far) when masked or
 * isolated, else appended, escaped, to that text */
static int emit_name(Sink *s, Buf *cur, const char *nm, Py_ssize_t nn, int masked) {
    if (!masked && !isolated(nm, nn)) return buf_add(cur, nm, nn);
    if ((masked || cur->len) && sink_bytes(s, cur->p, cur->len) < 0) return -1;
    if ((masked ? sink_name(s, nm, nn) : sink_bytes(s, nm, nn)) < 0) return -1;
    cur->len = 0;
    return 0;
}

static int emit_target(const Kernel *K, const Parsed *P, const Row *r, const char *cs, const RowMask *m, int masked,
                       Sink *s, Buf *cur) {
    if (!r->n_calls) return sink_str(s, &K->no_call);
    cur->len = 0;
    if (ADDL(cur, "```\n[{\"name\": \"") < 0) return -1;
    for (int c = 0; c < r->n_calls; c++) {
        const Call *call = &P->calls_v[r->call0 + c];
        if (c && ADDL(cur, "}}, {\"name\": \"") < 0) return -1;
        const char *nm;
        Py_ssize_t nn;
        const Tool *t = NULL;
        if (masked) {
            int ti = m->by_call[c];
            t = TOOL(K, m->tool[ti]);
            nm = m->names[m->name0[ti]];
            nn = m->name_len[m->name0[ti]];
        } else {
            nm = cs + call->name_off;
            nn = call->name_len;
        }
        if (emit_name(s, cur, nm, nn, masked) < 0) return -1;
        if (ADDL(cur, "\", \"arguments\": {") < 0) return -1;
        for (int a = 0; a < call->n_args; a++) {
            const Arg *arg = &P->args_v[call->arg0 + a];
            if (buf_add(cur, a ? ", \"" : "\"", a ? 3 : 1) < 0) return -1;
            const char *kn;
            Py_ssize_t kl;
            if (masked) {
                int q = 0;
                while (q < t->n_params && !(t->params_esc[q].n == arg->key_len &&
                                            !memcmp(t->params_esc[q].s, cs + arg->key_off, (size_t)arg->key_len)))
                    q++;
                kn = m->names[m->name0[m->by_call[c]] + 1 + q];
                kl = m->name_len[m->name0[m->by_call[c]] + 1 + q];
            } else {
                kn = cs + arg->key_off;
                kl = arg->key_len;
            }
            if (emit_name(s, cur, kn, kl, masked) < 0) return -1;
            if (ADDL(cur, "\": ") < 0 || add_spaced(cur, cs + arg->val_off, arg->val_len) < 0) return -1;
        }
    }
    if (ADDL(cur, "}}]\n```") < 0) return -1;
    return sink_bytes(s, cur->p, cur->len);
}

/* the prompt's tools, then the query */
static int emit_prompt(const Kernel *K, const Parsed *P, const Row *r, const RowMask *m, int masked, Sink *s,
                       int wrap, Buf *tmp) {
    if (sink_str(s, wrap ? &K->whead : &K->head) < 0) return -1;
    int n = m->n;
    if (!n && sink_str(s, &K->empty_list) < 0) return -1;
    for (int j = 0; j < n; j++) {
        int pos = 2 * (j > 0) + (j == n - 1);
        if (masked) {
            int ti = m->order[j];
            const Tool *t = TOOL(K, m->tool[ti]);
            const Tmpl *tp = &t->shown[pos];
            if (sink_str(s, &tp->lits[0]) < 0) return -1;
            for (int k = 0; k < tp->n_slots; k++) {
                int nm = m->name0[ti] + tp->slots[k];
                if (sink_name(s, m->names[nm], m->name_len[nm]) < 0) return -1;
                if (sink_str(s, &tp->lits[k + 1]) < 0) return -1;
            }
        } else {
            const Tool *t = TOOL(K, m->tool[j]);
            for (int k = 0; k < t->n_plain[pos]; k++)
                if (sink_str(s, &t->plain_utf8[pos][k]) < 0) return -1;
        }
    }
    return emit_query(K, P, r, s, wrap, tmp);
}

/* RowView.tools_json / calls_json of a masked row */
static int emit_masked_json(const Kernel *K, const Parsed *P, const Row *r, const char *cs, const RowMask *m, Buf *tb,
                            Buf *cb) {
    if (buf_addc(tb, '[') < 0) return -1;
    for (int j = 0; j < m->n; j++) {
        int ti = m->order[j];
        const Tmpl *tp = &TOOL(K, m->tool[ti])->canon;
        if (j && buf_addc(tb, ',') < 0) return -1;
        if (buf_add(tb, tp->lits[0].s, tp->lits[0].n) < 0) return -1;
        for (int k = 0; k < tp->n_slots; k++) {
            int nm = m->name0[ti] + tp->slots[k];
            if (buf_add(tb, m->names[nm], m->name_len[nm]) < 0 || buf_add(tb, tp->lits[k + 1].s, tp->lits[k + 1].n) < 0)
                return -1;
        }
    }
    if (buf_addc(tb, ']') < 0) return -1;
    if (!r->n_calls) return ADDL(cb, "[]");
    if (buf_addc(cb, '[') < 0) return -1;
    for (int c = 0; c < r->n_calls; c++) {
        const Call *call = &P->calls_v[r->call0 + c];
        int ti = m->by_call[c];
        const Tool *t = TOOL(K, m->tool[ti]);
        int fn = m->name0[ti];
        if ((c && buf_addc(cb, ',') < 0) || ADDL(cb, "{\"name\":\"") < 0 ||
            buf_add(cb, m->names[fn], m->name_len[fn]) < 0 || ADDL(cb, "\",\"arguments\":{") < 0)
            return -1;
        for (int a = 0; a < call->n_args; a++) {
            const Arg *arg = &P->args_v[call->arg0 + a];
            int q = 0;
            while (q < t->n_params && !(t->params_esc[q].n == arg->key_len &&
                                        !memcmp(t->params_esc[q].s, cs + arg->key_off, (size_t)arg->key_len)))
                q++;
            if ((a && buf_addc(cb, ',') < 0) || buf_addc(cb, '"') < 0 ||
                buf_add(cb, m->names[fn + 1 + q], m->name_len[fn + 1 + q]) < 0 || ADDL(cb, "\":") < 0 ||
                buf_add(cb, cs + arg->val_off, arg->val_len) < 0)
                return -1;
        }
        if (ADDL(cb, "}}") < 0) return -1;
    }
    return buf_addc(cb, ']');
}

typedef struct {
    Col ids, variants, parents;
} IdCols;

/* the decision for output row (copy k, row i): 0 = C, 1 = Python; fills m when 0 */
static int decide(const Kernel *K, const Parsed *P, Py_ssize_t i, uint64_t key, int split_masked, RowMask *m,
                  int *masked) {
    const Row *r = &P->rows[i];
    *masked = 0;
    if (r->status != ST_OK) return 1;
    row_tools(K, P, r, split_masked, m);
    if (!split_masked || !is_masked(K, key)) return 0;
    *masked = 1;
    Py_ssize_t cn;
    const char *cs = row_calls(P, i, &cn);
    return masked_needs_python(K, P, r, cs, m);
}

static int read_keys(PyObject *idx_o, PyObject *keys_o, Py_buffer *ib, Py_buffer *kb, Py_ssize_t *n, Py_ssize_t rows) {
    if (PyObject_GetBuffer(idx_o, ib, PyBUF_SIMPLE) < 0) return -1;
    if (PyObject_GetBuffer(keys_o, kb, PyBUF_SIMPLE) < 0) { PyBuffer_Release(ib); return -1; }
    *n = ib->len / 8;
    if (kb->len != ib->len) {
        PyErr_SetString(PyExc_ValueError, "idx and keys: int64 and uint64 arrays of one length");
        goto fail;
    }
    for (Py_ssize_t j = 0; j < *n; j++) {
        int64_t i = ((const int64_t *)ib->buf)[j];
        if (i < 0 || i >= rows) { PyErr_SetString(PyExc_IndexError, "row index out of range"); goto fail; }
    }
    return 0;
fail:
    PyBuffer_Release(ib);
    PyBuffer_Release(kb);
    return -1;
}

/* plan(parsed, idx int64 bytes, keys uint64 bytes (the copies' keys, copy-major), copies, split_masked)
 *   -> list of output positions that need Python */
static PyObject *parsed_plan(Parsed *P, PyObject *args) {
    PyObject *idx_o, *keys_o;
    int copies, split_masked;
    if (!PyArg_ParseTuple(args, "OOip", &idx_o, &keys_o, &copies, &split_masked)) return NULL;
    Py_buffer ib, kb;
    Py_ssize_t n;
    if (read_keys(idx_o, keys_o, &ib, &kb, &n, P->n) < 0) return NULL;
    if (n % (copies > 0 ? copies : 1)) { PyErr_SetString(PyExc_ValueError, "keys: copies * rows"); goto fail0; }
    PyObject *out = PyList_New(0);
    if (!out) goto fail0;
    RowMask *m = malloc(sizeof(RowMask));
    if (!m) { PyErr_NoMemory(); Py_DECREF(out); goto fail0; }
    for (Py_ssize_t t = 0; t < n; t++) {
        int64_t i = ((const int64_t *)ib.buf)[t];
        uint64_t key = ((const uint64_t *)kb.buf)[t];
        int masked;
        if (decide(P->kernel, P, i, key, split_masked, m, &masked)) {
            PyObject *x = PyLong_FromSsize_t(t);
            if (!x || PyList_Append(out, x) < 0) { Py_XDECREF(x); Py_DECREF(out); free(m); goto fail0; }
            Py_DECREF(x);
        }
    }
    free(m);
    PyBuffer_Release(&ib);
    PyBuffer_Release(&kb);
    return out;
fail0:
    PyBuffer_Release(&ib);
    PyBuffer_Release(&kb);
    return NULL;
}

static int add_num(Buf *b, long k) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%ld", k);
    return buf_add(b, tmp, n);
}

/* an override (a row made in Python), read before the row loop: the loop may run without the GIL */
typedef struct { const char *s; Py_ssize_t n; } Span;
typedef struct {
    Py_ssize_t t;                 /* output position */
    Span f[5];                    /* id, variant, parent (n = -1: None), tools, calls */
    int no_call;
    PyObject *prompt, *target;    /* borrowed (the overrides dict holds them) */
    Py_ssize_t frag0, n_prompt, n_target;  /* token mode: their fragments in the spans array */
} Ovr;

static int ovr_cmp(const void *a, const void *b) {
    Py_ssize_t x = ((const Ovr *)a)->t, y = ((const Ovr *)b)->t;
    return x < y ? -1 : x > y;
}

static int span_of(PyObject *o, Span *sp) {
    if (o == Py_None) { sp->s = NULL; sp->n = -1; return 0; }
    sp->s = PyUnicode_AsUTF8AndSize(o, &sp->n);
    return sp->s ? 0 : -1;
}

/* the fragments of a list of str, appended to spans (their UTF-8 lives in the str objects, which
 * `keep` holds) */
static int frag_spans(PyObject *frags, PyObject *keep, Span **spans, Py_ssize_t *len, Py_ssize_t *cap,
                      Py_ssize_t *count) {
    PyObject *f = PySequence_Fast(frags, "fragments");
    if (!f) return -1;
    int rc = PyList_Append(keep, f);
    Py_DECREF(f);
    if (rc < 0) return -1;
    *count = PySequence_Fast_GET_SIZE(f);
    if (*len + *count > *cap) {
        Py_ssize_t c = *cap ? *cap : 64;
        while (c < *len + *count) c *= 2;
        Span *p = realloc(*spans, (size_t)c * sizeof(Span));
        if (!p) { PyErr_NoMemory(); return -1; }
        *spans = p;
        *cap = c;
    }
    for (Py_ssize_t i = 0; i < *count; i++) {
        PyObject *x = PySequence_Fast_GET_ITEM(f, i);
        if (!PyUnicode_Check(x)) { PyErr_SetString(PyExc_TypeError, "fragments must be str"); return -1; }
        if (span_of(x, &(*spans)[*len + i]) < 0) return -1;
    }
    *len += *count;
    return 0;
}

/* the overrides dict read into an array sorted by position */
static int read_overrides(PyObject *overrides, int mode, PyObject *keep, Ovr **out, Py_ssize_t *n_out,
                          Span **spans, Py_ssize_t *n_spans) {
    Py_ssize_t n = PyDict_Size(overrides), pos = 0, i = 0, cap = 0;
    PyObject *key, *val;
    Ovr *v = calloc((size_t)(n ? n : 1), sizeof(Ovr));
    if (!v) { PyErr_NoMemory(); return -1; }
    *out = v;
    while (PyDict_Next(overrides, &pos, &key, &val)) {
        Ovr *x = &v[i++];
        x->t = PyLong_AsSsize_t(key);
        if (x->t == -1 && PyErr_Occurred()) return -1;
        PyObject *f[5];
        if (!PyArg_ParseTuple(val, "OOOUUOOp", &f[0], &f[1], &f[2], &f[3], &f[4], &x->prompt, &x->target, &x->no_call))
            return -1;
        if (!PyUnicode_Check(f[0]) || !PyUnicode_Check(f[1]) || (f[2] != Py_None && !PyUnicode_Check(f[2]))) {
            PyErr_SetString(PyExc_TypeError, "override: id, variant, parent must be str");
            return -1;
        }
        for (int c = 0; c < 5; c++)
            if (span_of(f[c], &x->f[c]) < 0) return -1;
        if (mode == 2) {
            x->frag0 = *n_spans;
            if (frag_spans(x->prompt, keep, spans, n_spans, &cap, &x->n_prompt) < 0 ||
                frag_spans(x->target, keep, spans, n_spans, &cap, &x->n_target) < 0)
                return -1;
        }
    }
    *n_out = n;
    qsort(v, (size_t)n, sizeof(Ovr), ovr_cmp);
    return 0;
}

static int sink_spans(Sink *s, const Span *sp, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (sink_bytes(s, sp[i].s, sp[i].n) < 0) return -1;
    return 0;
}

/* emit(parsed, ids col, variants col, parents col, idx, keys, copies, split_masked, mode, overrides)
 *   mode 0: render only (the prompt and answer texts are built, then dropped); 1: fragments;
 *   2: token ids from the kernel's token cache -- when fragments are missing from it, returns
 *   (None, [missing fragments]) instead: cache them (add_tokens) and call again.
 *   overrides: {output position: (id, variant, parent or None, tools, calls, prompt, target, no_call)} for
 *   the positions plan() returned (prompt/target: fragment lists in modes 1 and 2, ignored in mode 0).
 *   -> (offsets/data bytes of id, variant, parent, tools, calls; parent validity bytes (one a
 *       row); source rows int32 bytes; no-call count; rendered chars; prompts; targets; tokens)
 * In modes 0 and 2 the row loop runs without the GIL: another thread may run Python meanwhile
 * (prepare emits one block on a thread while it parses the next), and may parse and register
 * tools (their storage never moves), but not use this kernel's token cache or emit. */
static PyObject *parsed_emit(Parsed *P, PyObject *args) {
    PyObject *ids_s, *var_s, *par_s, *idx_o, *keys_o, *overrides;
    int copies, split_masked, mode;
    if (!PyArg_ParseTuple(args, "OOOOOipiO", &ids_s, &var_s, &par_s, &idx_o, &keys_o, &copies, &split_masked, &mode,
                          &overrides))
        return NULL;
    if (!PyDict_Check(overrides)) { PyErr_SetString(PyExc_TypeError, "overrides: dict"); return NULL; }
    Kernel *K = P->kernel;
    IdCols ic;
    memset(&ic, 0, sizeof ic);
    if (!K->out) {
        K->out = calloc(1, sizeof(Out));
        if (!K->out) return PyErr_NoMemory();
    }
    Out *op = (Out *)K->out;
#define o (*op)
    if (mode != 0 && !K->whead.obj) { PyErr_SetString(PyExc_RuntimeError, "set_wrap() first"); return NULL; }
    Buf tmp = {0}, cur = {0};
    RowMask *m = NULL;
    Py_buffer ib = {0}, kb = {0};
    Py_ssize_t n;
    PyObject *result = NULL, *keep = NULL;
    Ovr *ovr = NULL;
    Span *spans = NULL;
    Py_ssize_t n_ovr = 0, n_spans = 0, oc = 0;
    PyThreadState *save = NULL;
    if (col_init(&ic.ids, ids_s) < 0 || col_init(&ic.variants, var_s) < 0 || col_init(&ic.parents, par_s) < 0)
        goto done;
    if (ic.ids.n < P->n || ic.variants.n < P->n || ic.parents.n < P->n) {
        PyErr_SetString(PyExc_ValueError, "id columns shorter than the block");
        goto done;
    }
    if (read_keys(idx_o, keys_o, &ib, &kb, &n, P->n) < 0) goto done;
    if (copies < 1 || n % copies) { PyErr_SetString(PyExc_ValueError, "keys: copies * rows"); goto done; }
    Py_ssize_t per_copy = n / copies;
    keep = PyList_New(0);
    if (!keep || read_overrides(overrides, mode, keep, &ovr, &n_ovr, &spans, &n_spans) < 0) goto done;
    m = malloc(sizeof(RowMask));
    if (!m) { PyErr_NoMemory(); goto done; }
    if (mode == 1) {
        o.prompts = PyList_New(n);
        o.targets = PyList_New(n);
        if (!o.prompts || !o.targets) goto done;
    }
    if (mode == 2) {
        if (K->eos < 0) { PyErr_SetString(PyExc_RuntimeError, "set_tokens() first"); goto done; }
        if (ivec_push(&o.tok_off, 0) < 0) goto done;
    }
    Sink tsink = {NULL, NULL, K, &o.tok_ids, &o.miss_set, &o.miss_data, &o.miss_offs};
    for (int c = 0; c < 5; c++) {
        if (ivec_push(&o.offs[c], 0) < 0) goto done;
        if (!o.data[c].cap && o.hint[c] && buf_reserve(&o.data[c], o.hint[c]) < 0) goto done;
    }
    if (mode == 2 && !o.tok_ids.cap && o.tok_hint && ivec_reserve(&o.tok_ids, o.tok_hint) < 0) goto done;
    if (mode != 1) save = PyEval_SaveThread();  /* no Python objects below but in mode 1 */
    for (Py_ssize_t t = 0; t < n; t++) {
        int64_t i = ((const int64_t *)ib.buf)[t];
        uint64_t key = ((const uint64_t *)kb.buf)[t];
        long k = (long)(t / per_copy);
        int masked;
        int py = decide(K, P, i, key, split_masked, m, &masked);
        if (ivec_push(&o.src, (int32_t)i) < 0) goto loop_failed;
        if (py) {
            if (oc >= n_ovr || ovr[oc].t != t) {
                set_error(PyExc_KeyError, "no override for an output row the kernel does not handle");
                goto loop_failed;
            }
            const Ovr *v = &ovr[oc++];
            for (int c = 0; c < 5; c++)
                if (v->f[c].n > 0 && buf_add(&o.data[c], v->f[c].s, v->f[c].n) < 0) goto loop_failed;
            if (buf_addc(&o.valid, v->f[2].n >= 0) < 0 || out_row_end(&o) < 0) goto loop_failed;
            o.no_call += v->no_call;
            if (mode == 1) {
                Py_INCREF(v->prompt);
                PyList_SET_ITEM(o.prompts, t, v->prompt);
                Py_INCREF(v->target);
                PyList_SET_ITEM(o.targets, t, v->target);
            } else if (mode == 2) {
                Py_ssize_t start = o.tok_ids.len;
                if (sink_spans(&tsink, spans + v->frag0, v->n_prompt) < 0) goto loop_failed;
                Py_ssize_t pe = o.tok_ids.len;
                if (sink_spans(&tsink, spans + v->frag0 + v->n_prompt, v->n_target) < 0 ||
                    tok_row_end(&o, K, start, pe) < 0)
                    goto loop_failed;
            }
            continue;
        }
        const Row *r = &P->rows[i];
        Py_ssize_t cn, idn, vn, pn;
        const char *cs = row_calls(P, i, &cn);
        const char *ids = col_get(&ic.ids, i, &idn);
        const char *vs = col_get(&ic.variants, i, &vn);
        int pvalid = col_valid(&ic.parents, i);
        const char *ps = pvalid ? col_get(&ic.parents, i, &pn) : NULL;
        if (!pvalid) pn = 0;
        /* output_identity */
        if (buf_add(&o.data[0], ids, idn) < 0) goto loop_failed;
        if (masked) {
            if (ADDL(&o.data[0], "~m") < 0 || add_num(&o.data[0], k) < 0) goto loop_failed;
        } else if (k) {
            if (ADDL(&o.data[0], "~c") < 0 || add_num(&o.data[0], k) < 0) goto loop_failed;
        }
        if (buf_add(&o.data[1], vs, vn) < 0) goto loop_failed;
        if (masked && ADDL(&o.data[1], "+masked") < 0) goto loop_failed;
        int has_parent = 1;
        if (masked || k) {
            if (pn > 0) { if (buf_add(&o.data[2], ps, pn) < 0) goto loop_failed; }
            else if (buf_add(&o.data[2], ids, idn) < 0) goto loop_failed;
        } else if (pvalid) {
            if (buf_add(&o.data[2], ps, pn) < 0) goto loop_failed;
        } else {
            has_parent = 0;
        }
        if (buf_addc(&o.valid, (char)has_parent) < 0) goto loop_failed;
        if (masked) {
            draw_row_names(K, key, m);
            if (emit_masked_json(K, P, r, cs, m, &o.data[3], &o.data[4]) < 0) goto loop_failed;
        } else {
            Py_ssize_t tn;
            const char *ts = col_get(&P->tools, i, &tn);
            if (buf_add(&o.data[3], ts, tn) < 0 || buf_add(&o.data[4], cs, cn) < 0) goto loop_failed;
        }
        if (out_row_end(&o) < 0) goto loop_failed;
        if (!r->n_calls) o.no_call++;
        /* the prompt and the answer */
        Sink s;
        if (mode == 2) {
            Py_ssize_t start = o.tok_ids.len;
            if (emit_prompt(K, P, r, m, masked, &tsink, 1, &tmp) < 0) goto loop_failed;
            Py_ssize_t pe = o.tok_ids.len;
            if (emit_target(K, P, r, cs, m, masked, &tsink, &cur) < 0 || tok_row_end(&o, K, start, pe) < 0)
                goto loop_failed;
        } else if (mode == 1) {
            PyObject *pl = PyList_New(0);
            if (!pl) goto loop_failed;
            PyList_SET_ITEM(o.prompts, t, pl);
            memset(&s, 0, sizeof s);
            s.list = pl;
            if (emit_prompt(K, P, r, m, masked, &s, 1, &tmp) < 0) goto loop_failed;
            PyObject *tl = PyList_New(0);
            if (!tl) goto loop_failed;
            PyList_SET_ITEM(o.targets, t, tl);
            s.list = tl;
            if (emit_target(K, P, r, cs, m, masked, &s, &cur) < 0) goto loop_failed;
        } else {
            o.scratch.len = 0;
            memset(&s, 0, sizeof s);
            s.buf = &o.scratch;
            if (emit_prompt(K, P, r, m, masked, &s, 0, &tmp) < 0) goto loop_failed;
            if (emit_target(K, P, r, cs, m, masked, &s, &cur) < 0) goto loop_failed;
            o.rendered += o.scratch.len;
        }
    }
    if (save) { PyEval_RestoreThread(save); save = NULL; }
    if (oc != n_ovr) {
        PyErr_SetString(PyExc_ValueError, "overrides given for rows the kernel handles");
        goto done;
    }
    if (mode == 2 && o.miss_offs.len) {
        PyObject *misses = PyList_New(o.miss_offs.len);
        if (!misses) goto done;
        for (Py_ssize_t j = 0, a = 0; j < o.miss_offs.len; a = o.miss_offs.p[j++]) {
            PyObject *u = PyUnicode_DecodeUTF8(o.miss_data.p + a, o.miss_offs.p[j] - a, "strict");
            if (!u) { Py_DECREF(misses); goto done; }
            PyList_SET_ITEM(misses, j, u);
        }
        result = Py_BuildValue("(ON)", Py_None, misses);
        goto done;
    }
    {
        PyObject *cols[5][2];
        memset(cols, 0, sizeof cols);
        int bad = 0;
        for (int c = 0; c < 5; c++) {
            if (o.data[c].len > INT32_MAX) bad = 2;
            cols[c][0] = PyBytes_FromStringAndSize((const char *)o.offs[c].p, o.offs[c].len * 4);
            o.hint[c] = o.data[c].len;
            cols[c][1] = blob_of(o.data[c].p, o.data[c].len);  /* the memory goes with it */
            o.data[c].p = NULL;
            o.data[c].len = o.data[c].cap = 0;
            if (!cols[c][0] || !cols[c][1]) bad = 1;
        }
        PyObject *valid = PyBytes_FromStringAndSize(o.valid.p ? o.valid.p : "", o.valid.len);
        PyObject *src = PyBytes_FromStringAndSize((const char *)o.src.p, o.src.len * 4);
        if (bad || !valid || !src) {
            if (bad == 2) PyErr_SetString(PyExc_OverflowError, "a block's column exceeds 2 GB");
            for (int c = 0; c < 5; c++) { Py_XDECREF(cols[c][0]); Py_XDECREF(cols[c][1]); }
            Py_XDECREF(valid);
            Py_XDECREF(src);
            goto done;
        }
        PyObject *prompts = o.prompts ? o.prompts : Py_None, *targets = o.targets ? o.targets : Py_None;
        PyObject *tokens = Py_None;
        Py_INCREF(prompts);
        Py_INCREF(targets);
        if (mode == 2) {
            o.tok_hint = o.tok_ids.len;
            PyObject *ids_blob = blob_of(o.tok_ids.p, o.tok_ids.len * 4);
            o.tok_ids.p = NULL;
            o.tok_ids.len = o.tok_ids.cap = 0;
            tokens = !ids_blob ? NULL : Py_BuildValue("(y#Ny#)", (const char *)o.tok_off.p, o.tok_off.len * 4, ids_blob,
                                                      (const char *)o.n_prompt.p, o.n_prompt.len * 4);
            if (!tokens) {
                for (int c = 0; c < 5; c++) { Py_DECREF(cols[c][0]); Py_DECREF(cols[c][1]); }
                Py_DECREF(valid); Py_DECREF(src); Py_DECREF(prompts); Py_DECREF(targets);
                goto done;
            }
        } else {
            Py_INCREF(tokens);
        }
        result = Py_BuildValue("((NN)(NN)(NN)(NN)(NN)NNnnNNN)", cols[0][0], cols[0][1], cols[1][0], cols[1][1],
                               cols[2][0], cols[2][1], cols[3][0], cols[3][1], cols[4][0], cols[4][1], valid, src,
                               o.no_call, o.rendered, prompts, targets, tokens);
    }
    goto done;
loop_failed:
    if (save) PyEval_RestoreThread(save);
done:
    free(ovr);
    free(spans);
    Py_XDECREF(keep);
    col_release(&ic.ids);
    col_release(&ic.variants);
    col_release(&ic.parents);
    if (ib.obj) PyBuffer_Release(&ib);
    if (kb.obj) PyBuffer_Release(&kb);
    free(m);
    buf_free(&tmp);
    buf_free(&cur);
    out_reset(op);
#undef o
    return result;
}


/* ------------------------------------------------------------------ hashes (ids -> keys, split) */

static inline uint64_t rotr64(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }
static inline uint32_t rotr32(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static const uint64_t B2_IV[8] = {0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL,
                                  0xa54ff53a5f1d36f1ULL, 0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL,
                                  0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL};
static const uint8_t B2_SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4}, {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13}, {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11}, {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5}, {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};

static void b2_compress(uint64_t h[8], const uint8_t block[128], uint64_t t, int last) {
    uint64_t m[16], v[16];
    for (int i = 0; i < 16; i++) {
        uint64_t w = 0;
        for (int b = 7; b >= 0; b--) w = (w << 8) | block[8 * i + b];
        m[i] = w;
    }
    for (int i = 0; i < 8; i++) { v[i] = h[i]; v[i + 8] = B2_IV[i]; }
    v[12] ^= t;
    if (last) v[14] = ~v[14];
#define B2G(a, b, c, d, x, y)                   \
    a = a + b + x; d = rotr64(d ^ a, 32);       \
    c = c + d; b = rotr64(b ^ c, 24);           \
    a = a + b + y; d = rotr64(d ^ a, 16);       \
    c = c + d; b = rotr64(b ^ c, 63);
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = B2_SIGMA[r];
        B2G(v[0], v[4], v[8], v[12], m[s[0]], m[s[1]]);
        B2G(v[1], v[5], v[9], v[13], m[s[2]], m[s[3]]);
        B2G(v[2], v[6], v[10], v[14], m[s[4]], m[s[5]]);
        B2G(v[3], v[7], v[11], v[15], m[s[6]], m[s[7]]);
        B2G(v[0], v[5], v[10], v[15], m[s[8]], m[s[9]]);
        B2G(v[1], v[6], v[11], v[12], m[s[10]], m[s[11]]);
        B2G(v[2], v[7], v[8], v[13], m[s[12]], m[s[13]]);
        B2G(v[3], v[4], v[9], v[14], m[s[14]], m[s[15]]);
    }
#undef B2G
    for (int i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/* BLAKE2b with an 8-byte digest (hashlib.blake2b(data, digest_size=8)), as a little-endian int */
static uint64_t blake2b_64(const uint8_t *data, Py_ssize_t n) {
    uint64_t h[8];
    for (int i = 0; i < 8; i++) h[i] = B2_IV[i];
    h[0] ^= 0x01010000ULL ^ 8ULL;
    uint8_t block[128];
    uint64_t t = 0;
    while (n > 128) {
        t += 128;
        b2_compress(h, data, t, 0);
        data += 128;
        n -= 128;
    }
    memset(block, 0, sizeof block);
    memcpy(block, data, (size_t)n);
    t += (uint64_t)n;
    b2_compress(h, block, t, 1);
    return h[0];  /* the first 8 bytes of the digest, little-endian */
}

static const uint32_t SHA_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

static void sha_compress(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16) | ((uint32_t)p[4 * i + 2] << 8) | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr32(w[i - 15], 7) ^ rotr32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr32(w[i - 2], 17) ^ rotr32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t S1 = rotr32(e, 6) ^ rotr32(e, 11) ^ rotr32(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = hh + S1 + ch + SHA_K[i] + w[i];
        uint32_t S0 = rotr32(a, 2) ^ rotr32(a, 13) ^ rotr32(a, 22);
        uint32_t mj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = S0 + mj;
        hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

/* the first 8 bytes of SHA-256, big-endian */
static uint64_t sha256_64(const uint8_t *data, Py_ssize_t n) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    Py_ssize_t left = n;
    const uint8_t *p = data;
    while (left >= 64) { sha_compress(h, p); p += 64; left -= 64; }
    uint8_t block[128];
    memset(block, 0, sizeof block);
    memcpy(block, p, (size_t)left);
    block[left] = 0x80;
    int blocks = left + 9 > 64 ? 2 : 1;
    uint64_t bits = (uint64_t)n * 8;
    for (int b = 0; b < 8; b++) block[64 * blocks - 1 - b] = (uint8_t)(bits >> (8 * b));
    for (int k = 0; k < blocks; k++) sha_compress(h, block + 64 * k);
    return ((uint64_t)h[0] << 32) | h[1];
}

/* hash_ids(ids col, blake prefix bytes, sha prefix bytes, fraction)
 *   -> (blake2b-64 of prefix + id (uint64 bytes), sha256 of prefix + id < fraction (uint8 bytes)) */
/* hash_ids(ids, mask_prefix, split_prefix, fraction, ranks=()) -> (keys, evals, rank_keys): for each id,
 * BLAKE2b-64 of mask_prefix + id (the row key), SHA-256 of split_prefix + id against `fraction` (in eval),
 * and for each (train_prefix, eval_prefix) of `ranks` BLAKE2b-64 of the prefix of the row's split + id
 * (row-major: len(ranks) keys a row). The hashing runs without the GIL (a reader thread can do it). */
#define MAX_RANKS 4
static PyObject *py_hash_ids(PyObject *mod, PyObject *args) {
    PyObject *spec, *ranks_o = NULL;
    Py_buffer bp, sp;
    Py_buffer rp[MAX_RANKS][2];
    double fraction;
    if (!PyArg_ParseTuple(args, "Oy*y*d|O", &spec, &bp, &sp, &fraction, &ranks_o)) return NULL;
    Col c;
    PyObject *keys = NULL, *evals = NULL, *rkeys = NULL, *result = NULL;
    char *tmp = NULL;
    Py_ssize_t nr = 0, held = 0;
    memset(rp, 0, sizeof rp);
    int have_col = col_init(&c, spec) == 0;
    if (!have_col) goto done;
    if (ranks_o) {
        PyObject *fast = PySequence_Fast(ranks_o, "ranks: a sequence of (train prefix, eval prefix)");
        if (!fast) goto done;
        nr = PySequence_Fast_GET_SIZE(fast);
        if (nr > MAX_RANKS) { Py_DECREF(fast); PyErr_SetString(PyExc_ValueError, "ranks: at most 4"); goto done; }
        for (; held < nr; held++)
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, held), "y*y*", &rp[held][0], &rp[held][1])) break;
        Py_DECREF(fast);
        if (held < nr) goto done;
    }
    /* one buffer for the longest prefix + the longest id: no allocation without the GIL */
    Py_ssize_t longest = 0, pre = bp.len > sp.len ? bp.len : sp.len;
    for (Py_ssize_t i = 0; i < c.n; i++) {
        Py_ssize_t n;
        col_get(&c, i, &n);
        if (n > longest) longest = n;
    }
    for (Py_ssize_t r = 0; r < nr; r++)
        for (int e = 0; e < 2; e++) if (rp[r][e].len > pre) pre = rp[r][e].len;
    keys = PyBytes_FromStringAndSize(NULL, c.n * 8);
    evals = PyBytes_FromStringAndSize(NULL, c.n);
    rkeys = PyBytes_FromStringAndSize(NULL, c.n * nr * 8);
    tmp = malloc((size_t)(pre + longest + 1));
    if (!keys || !evals || !rkeys || !tmp) { if (!PyErr_Occurred()) PyErr_NoMemory(); goto done; }
    char *kp = PyBytes_AS_STRING(keys), *ep = PyBytes_AS_STRING(evals), *rk = PyBytes_AS_STRING(rkeys);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < c.n; i++) {
        Py_ssize_t n;
        const char *s = col_get(&c, i, &n);
        if (!n) s = "";  /* an empty id: there may be no data buffer */
        memcpy(tmp, bp.buf, (size_t)bp.len);
        memcpy(tmp + bp.len, s, (size_t)n);
        uint64_t k = blake2b_64((const uint8_t *)tmp, bp.len + n);
        memcpy(kp + 8 * i, &k, 8);
        memcpy(tmp, sp.buf, (size_t)sp.len);
        memcpy(tmp + sp.len, s, (size_t)n);
        uint64_t h = sha256_64((const uint8_t *)tmp, sp.len + n);
        int in_eval = (double)h / 18446744073709551616.0 < fraction;
        ep[i] = (char)in_eval;
        for (Py_ssize_t r = 0; r < nr; r++) {
            const Py_buffer *pb = &rp[r][in_eval];
            memcpy(tmp, pb->buf, (size_t)pb->len);
            memcpy(tmp + pb->len, s, (size_t)n);
            uint64_t rkey = blake2b_64((const uint8_t *)tmp, pb->len + n);
            memcpy(rk + 8 * (i * nr + r), &rkey, 8);
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(OOO)", keys, evals, rkeys);
done:
    free(tmp);
    if (have_col) col_release(&c);
    for (Py_ssize_t r = 0; r < held; r++) { PyBuffer_Release(&rp[r][0]); PyBuffer_Release(&rp[r][1]); }
    PyBuffer_Release(&bp);
    PyBuffer_Release(&sp);
    Py_XDECREF(keys);
    Py_XDECREF(evals);
    Py_XDECREF(rkeys);
    return result;
}

/* keys(prefix, ids) -> BLAKE2b-64 (little-endian) of prefix + utf8(id) for each str of the list:
 * masking.stable_key(seed, purpose, id) with prefix = f"{seed}\x1f{purpose}\x1f" */
static PyObject *py_keys(PyObject *mod, PyObject *args) {
    Py_buffer bp;
    PyObject *seq;
    if (!PyArg_ParseTuple(args, "y*O", &bp, &seq)) return NULL;
    PyObject *fast = PySequence_Fast(seq, "ids must be a sequence of str");
    if (!fast) { PyBuffer_Release(&bp); return NULL; }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    PyObject *keys = PyBytes_FromStringAndSize(NULL, n * 8);
    Buf tmp = {0};
    if (!keys) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len;
        const char *s = PyUnicode_CheckExact(items[i]) ? PyUnicode_AsUTF8AndSize(items[i], &len) : NULL;
        if (!s) {  /* not exactly str (a subclass may str() differently): the caller goes to Python */
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "ids must be str");
            goto fail;
        }
        tmp.len = 0;
        if (buf_add(&tmp, bp.buf, bp.len) < 0 || buf_add(&tmp, s, len) < 0) goto fail;
        uint64_t k = blake2b_64((const uint8_t *)tmp.p, tmp.len);
        memcpy(PyBytes_AS_STRING(keys) + 8 * i, &k, 8);
    }
    buf_free(&tmp);
    Py_DECREF(fast);
    PyBuffer_Release(&bp);
    return keys;
fail:
    buf_free(&tmp);
    Py_DECREF(fast);
    PyBuffer_Release(&bp);
    Py_XDECREF(keys);
    return NULL;
}

/* ------------------------------------------------------------------ compile_tool
 *
 * masking.compile_template and prompts._Shown for a tool given as its canonical compact JSON
 * text (what schema.dumps writes of its parse: checked here), by one walk over the text instead
 * of parsing and dumping marked copies of the tool. For each of the two forms -- the compact
 * one (",", ":") and the prompt's (", ", ": "; prompts.prompt_spec on every parameter spec:
 * "x-" keys dropped, "default is '<v>'" appended to the description) -- the template with name
 * and spec slots, the template with name slots only, and the spec texts; for the prompt form
 * also the whole text. A slot is 0 for the function name, i + 1 for parameter i's name and
 * -(i + 1) for parameter i's spec, as in masking.Template.
 *
 * Cases left to Python (the function returns None): a text that is not canonical (the templates
 * are made from the dump of the parse, not from the text); no top-level string "name"; "parameters"
 * or its "properties" missing or not objects (the prompt form adds them); a "required" entry
 * that is an array or object (Python raises); a default or description that needs Python's
 * str() or lower() (not plain ASCII, escapes, lists, objects); more than CT_MAX_MEMBERS keys. */

#define CT_MAX_MEMBERS 256
#define CT_PYTHON 1 /* return code: a case left to Python */

typedef struct {
    Py_ssize_t ks, ke, vs, ve; /* key content [ks, ke) without its quotes; value [vs, ve) */
} Member;

/* end of the JSON value at s[i], -1 if there is none or it is not canonical (scan_value) */
static Py_ssize_t ct_skip(const char *s, Py_ssize_t n, Py_ssize_t i, int depth) {
    const char *e = scan_value(s + i, s + n, depth);
    return e ? e - s : -1;
}

/* the members of the object at s[i] (ending at or before n); -1: not an object, or too many */
static int ct_members(const char *s, Py_ssize_t n, Py_ssize_t i, Member *m) {
    if (i >= n || s[i] != '{') return -1;
    Py_ssize_t j = i + 1;
    if (j < n && s[j] == '}') return 0;
    for (int k = 0; k < CT_MAX_MEMBERS; k++) {
        if (j >= n || s[j] != '"') return -1;
        Py_ssize_t ke = ct_skip(s, n, j, 1);
        if (ke < 0 || ke >= n || s[ke] != ':') return -1;
        Py_ssize_t ve = ct_skip(s, n, ke + 1, 1);
        if (ve < 0 || ve >= n) return -1;
        m[k] = (Member){j + 1, ke - 1, ke + 1, ve};
        if (s[ve] == '}') return k + 1;
        if (s[ve] != ',') return -1;
        j = ve + 1;
    }
    return -1;
}

static inline int ct_key_is(const char *s, const Member *m, const char *key) {
    size_t n = strlen(key);
    return (size_t)(m->ke - m->ks) == n && !memcmp(s + m->ks, key, n);
}

/* printable ASCII without escapes: Python's str() and lower() of it are the bytes' own */
static int ct_plain(const char *s, Py_ssize_t n) {
    for (Py_ssize_t j = 0; j < n; j++)
        if ((unsigned char)s[j] >= 0x80 || s[j] == '\\') return 0;
    return 1;
}

/* is needle in hay, ASCII case-insensitively (note.lower() in desc.lower() for plain ASCII) */
static int ct_icontains(const char *hay, Py_ssize_t hn, const char *needle, Py_ssize_t nn) {
    for (Py_ssize_t i = 0; i + nn <= hn; i++) {
        Py_ssize_t j = 0;
        while (j < nn) {
            char a = hay[i + j], b = needle[j];
            if (a >= 'A' && a <= 'Z') a += 32;
            if (b >= 'A' && b <= 'Z') b += 32;
            if (a != b) break;
            j++;
        }
        if (j == nn) return 1;
    }
    return 0;
}

/* the JSON value s[i:e] with ", " and ": " between items (json.dumps' default separators) */
static int ct_respace(Buf *out, const char *s, Py_ssize_t i, Py_ssize_t e) {
    Py_ssize_t run = i;
    for (Py_ssize_t j = i; j < e; j++) {
        char c = s[j];
        if (c == '"') {
            for (j++; j < e && s[j] != '"'; j++)
                if (s[j] == '\\') j++;
        } else if (c == ',' || c == ':') {
            if (buf_add(out, s + run, j + 1 - run) < 0 || buf_addc(out, ' ') < 0) return -1;
            run = j + 1;
        }
    }
    return buf_add(out, s + run, e - run);
}

/* prompts.prompt_spec of the spec s[vs:ve], written with ", " / ": " separators */
static int ct_prompt_spec(Buf *out, const char *s, Py_ssize_t vs, Py_ssize_t ve) {
    if (s[vs] != '{') return ct_respace(out, s, vs, ve);
    Member m[CT_MAX_MEMBERS];
    int k = ct_members(s, ve, vs, m);
    if (k < 0) return CT_PYTHON;
    int def = -1, desc = -1;
    for (int j = 0; j < k; j++) {
        if (ct_key_is(s, &m[j], "default")) def = j;
        else if (ct_key_is(s, &m[j], "description")) desc = j;
    }
    /* str(default), unless the default is None or "" (then no note) */
    const char *sd = NULL;
    Py_ssize_t sdn = 0;
    if (def >= 0) {
        const char *v = s + m[def].vs;
        Py_ssize_t vn = m[def].ve - m[def].vs;
        if (v[0] == '"') {
            if (vn > 2 && !ct_plain(v + 1, vn - 2)) return CT_PYTHON;
            if (vn > 2) sd = v + 1, sdn = vn - 2;
        } else if (vn == 4 && !memcmp(v, "true", 4)) {
            sd = "True", sdn = 4;
        } else if (vn == 5 && !memcmp(v, "false", 5)) {
            sd = "False", sdn = 5;
        } else if (v[0] == '-' || (v[0] >= '0' && v[0] <= '9')) {
            sd = v, sdn = vn; /* str() of a canonical number is its JSON text */
        } else if (!(vn == 4 && !memcmp(v, "null", 4))) {
            return CT_PYTHON; /* a list or an object: Python's repr */
        }
    }
    /* the new description: desc.rstrip() + sep + note, unless the note is in it already */
    Buf nd = {0};
    int noted = 0;
    if (sd != NULL) {
        const char *d = "";
        Py_ssize_t dn = 0;
        if (desc >= 0) {
            const char *dv = s + m[desc].vs;
            if (dv[0] != '"') return CT_PYTHON; /* str() of a non-string */
            d = dv + 1, dn = m[desc].ve - m[desc].vs - 2;
            if (!ct_plain(d, dn)) return CT_PYTHON;
        }
        while (dn > 0 && d[dn - 1] == ' ') dn--; /* rstrip(): the only white space left unescaped */
        if ((dn && (buf_add(&nd, d, dn) < 0 || (d[dn - 1] == '.' ? ADDL(&nd, " ") : ADDL(&nd, ", ")) < 0)) ||
            ADDL(&nd, "default is '") < 0 || buf_add(&nd, sd, sdn) < 0 || buf_addc(&nd, '\'') < 0)
            goto fail;
        Py_ssize_t note = nd.len - (sdn + 13); /* where the note starts */
        noted = !ct_icontains(d, dn, nd.p + note, sdn + 13);
    }
    int first = 1;
    if (buf_addc(out, '{') < 0) goto fail;
    for (int j = 0; j < k; j++) {
        if (m[j].ke - m[j].ks >= 2 && s[m[j].ks] == 'x' && s[m[j].ks + 1] == '-') continue;
        if ((!first && ADDL(out, ", ") < 0) || buf_add(out, s + m[j].ks - 1, m[j].ke - m[j].ks + 2) < 0 ||
            ADDL(out, ": ") < 0)
            goto fail;
        first = 0;
        if (j == desc && noted) {
            if (buf_addc(out, '"') < 0 || buf_add(out, nd.p, nd.len) < 0 || buf_addc(out, '"') < 0) goto fail;
        } else if (ct_respace(out, s, m[j].vs, m[j].ve) < 0) {
            goto fail;
        }
    }
    if (noted && desc < 0) { /* a new key: last */
        if ((!first && ADDL(out, ", ") < 0) || ADDL(out, "\"description\": \"") < 0 || buf_add(out, nd.p, nd.len) < 0 ||
            buf_addc(out, '"') < 0)
            goto fail;
    }
    buf_free(&nd);
    return buf_addc(out, '}');
fail:
    buf_free(&nd);
    return -1;
}

/* one form of a tool being written: its two templates (literal being built + lits and slots so
 * far), its whole text (prompt form only) and its spec texts */
typedef struct {
    int spaced;
    Buf full, inl, text, spec;
    PyObject *full_lits, *full_slots, *inl_lits, *inl_slots, *specs;
} Form;

static int form_init(Form *f, int spaced) {
    memset(f, 0, sizeof(*f));
    f->spaced = spaced;
    f->full_lits = PyList_New(0), f->full_slots = PyList_New(0);
    f->inl_lits = PyList_New(0), f->inl_slots = PyList_New(0), f->specs = PyList_New(0);
    return f->full_lits && f->full_slots && f->inl_lits && f->inl_slots && f->specs ? 0 : -1;
}

static void form_free(Form *f) {
    buf_free(&f->full), buf_free(&f->inl), buf_free(&f->text), buf_free(&f->spec);
    Py_XDECREF(f->full_lits), Py_XDECREF(f->full_slots), Py_XDECREF(f->inl_lits), Py_XDECREF(f->inl_slots);
    Py_XDECREF(f->specs);
}

static int form_lit(Form *f, const char *p, Py_ssize_t n) {
    return buf_add(&f->full, p, n) < 0 || buf_add(&f->inl, p, n) < 0 || (f->spaced && buf_add(&f->text, p, n) < 0)
               ? -1 : 0;
}

#define FORM_LIT(f, lit) form_lit((f), (lit), (Py_ssize_t)sizeof(lit) - 1)

static int form_sep(Form *f, int first, int kv) {
    if (kv) return f->spaced ? FORM_LIT(f, ": ") : FORM_LIT(f, ":");
    if (first) return 0;
    return f->spaced ? FORM_LIT(f, ", ") : FORM_LIT(f, ",");
}

/* a JSON value of the tool as this form writes it */
static int form_copy(Form *f, const char *s, Py_ssize_t vs, Py_ssize_t ve) {
    if (!f->spaced) return form_lit(f, s + vs, ve - vs);
    f->spec.len = 0;
    if (ct_respace(&f->spec, s, vs, ve) < 0) return -1;
    return form_lit(f, f->spec.p, f->spec.len);
}

/* the literal built so far as the next of lits, and the slot after it */
static int push_slot(Buf *cur, PyObject *lits, PyObject *slots, long slot) {
    PyObject *lit = PyUnicode_DecodeUTF8(cur->p ? cur->p : "", cur->len, "strict");
    if (!lit) return -1;
    int rc = PyList_Append(lits, lit);
    Py_DECREF(lit);
    if (rc < 0) return -1;
    cur->len = 0;
    if (slots == NULL) return 0;
    PyObject *v = PyLong_FromLong(slot);
    if (!v) return -1;
    rc = PyList_Append(slots, v);
    Py_DECREF(v);
    return rc;
}

/* name slot k; the name itself (its JSON content, without the quotes) goes into the text */
static int form_name(Form *f, long k, const char *name, Py_ssize_t n) {
    if (push_slot(&f->full, f->full_lits, f->full_slots, k) < 0 || push_slot(&f->inl, f->inl_lits, f->inl_slots, k) < 0)
        return -1;
    return f->spaced ? buf_add(&f->text, name, n) : 0;
}

/* parameter i's spec: a slot of the full template, inlined in the other; its text kept */
static int form_spec(Form *f, long i, const char *s, Py_ssize_t vs, Py_ssize_t ve) {
    f->spec.len = 0;
    int rc = f->spaced ? ct_prompt_spec(&f->spec, s, vs, ve) : buf_add(&f->spec, s + vs, ve - vs);
    if (rc) return rc;
    PyObject *text = PyUnicode_DecodeUTF8(f->spec.p ? f->spec.p : "", f->spec.len, "strict");
    if (!text) return -1;
    rc = PyList_Append(f->specs, text);
    Py_DECREF(text);
    if (rc < 0 || push_slot(&f->full, f->full_lits, f->full_slots, -(i + 1)) < 0) return -1;
    return buf_add(&f->inl, f->spec.p, f->spec.len) < 0 || (f->spaced && buf_add(&f->text, f->spec.p, f->spec.len) < 0)
               ? -1 : 0;
}

/* the members of a tool that its forms rewrite */
typedef struct {
    const char *s;
    Member top[CT_MAX_MEMBERS], params[CT_MAX_MEMBERS], props[CT_MAX_MEMBERS];
    int n_top, n_params, n_props, name, parameters, properties, required;
} ToolText;

static int ct_tool(ToolText *t, const char *s, Py_ssize_t n) {
    t->s = s;
    t->name = t->parameters = t->properties = t->required = -1;
    if (ct_skip(s, n, 0, 0) != n || (t->n_top = ct_members(s, n, 0, t->top)) < 0) return CT_PYTHON;
    for (int j = 0; j < t->n_top; j++) {
        if (ct_key_is(s, &t->top[j], "name")) t->name = j;
        else if (ct_key_is(s, &t->top[j], "parameters")) t->parameters = j;
    }
    if (t->name < 0 || s[t->top[t->name].vs] != '"' || t->parameters < 0) return CT_PYTHON;
    Member *pm = &t->top[t->parameters];
    if ((t->n_params = ct_members(s, pm->ve, pm->vs, t->params)) < 0) return CT_PYTHON;
    for (int j = 0; j < t->n_params; j++) {
        if (ct_key_is(s, &t->params[j], "properties")) t->properties = j;
        else if (ct_key_is(s, &t->params[j], "required")) t->required = j;
    }
    if (t->properties < 0) return CT_PYTHON;
    Member *pp = &t->params[t->properties];
    if ((t->n_props = ct_members(s, pp->ve, pp->vs, t->props)) < 0) return CT_PYTHON;
    if (t->required >= 0 && s[t->params[t->required].vs] != '[') t->required = -1; /* not a list: left as it is */
    return 0;
}

/* the index of the parameter named by the JSON string s[vs:ve], -1 if none */
static int ct_param_of(const ToolText *t, Py_ssize_t vs, Py_ssize_t ve) {
    for (int i = 0; i < t->n_props; i++)
        if (t->props[i].ke - t->props[i].ks == ve - vs - 2 && !memcmp(t->s + t->props[i].ks, t->s + vs + 1, ve - vs - 2))
            return i;
    return -1;
}

/* the "required" list with the parameters' names as slots (compile_template: a non-name entry
 * stays as it is; an array or object entry is Python's TypeError) */
static int form_required(Form *f, const ToolText *t, Py_ssize_t vs, Py_ssize_t ve) {
    const char *s = t->s;
    if (FORM_LIT(f, "[") < 0) return -1;
    Py_ssize_t j = vs + 1;
    for (int first = 1; j < ve - 1; first = 0) {
        Py_ssize_t e = ct_skip(s, ve, j, 1);
        if (e < 0) return CT_PYTHON;
        if (s[j] == '[' || s[j] == '{') return CT_PYTHON;
        if (form_sep(f, first, 0) < 0) return -1;
        int i = s[j] == '"' ? ct_param_of(t, j, e) : -1;
        if (i >= 0) {
            if (FORM_LIT(f, "\"") < 0 || form_name(f, i + 1, s + j + 1, e - j - 2) < 0 || FORM_LIT(f, "\"") < 0) return -1;
        } else if (form_copy(f, s, j, e) < 0) {
            return -1;
        }
        j = e + 1; /* past the comma */
    }
    return FORM_LIT(f, "]");
}

static int form_write(Form *f, const ToolText *t) {
    const char *s = t->s;
    int rc;
    if (FORM_LIT(f, "{") < 0) return -1;
    for (int j = 0; j < t->n_top; j++) {
        const Member *m = &t->top[j];
        if (form_sep(f, j == 0, 0) < 0 || form_lit(f, s + m->ks - 1, m->ke - m->ks + 2) < 0 || form_sep(f, 0, 1) < 0)
            return -1;
        if (j == t->name) {
            if (FORM_LIT(f, "\"") < 0 || form_name(f, 0, s + m->vs + 1, m->ve - m->vs - 2) < 0 || FORM_LIT(f, "\"") < 0)
                return -1;
            continue;
        }
        if (j != t->parameters) {
            if (form_copy(f, s, m->vs, m->ve) < 0) return -1;
            continue;
        }
        if (FORM_LIT(f, "{") < 0) return -1;
        for (int q = 0; q < t->n_params; q++) {
            const Member *pm = &t->params[q];
            if (form_sep(f, q == 0, 0) < 0 || form_lit(f, s + pm->ks - 1, pm->ke - pm->ks + 2) < 0 ||
                form_sep(f, 0, 1) < 0)
                return -1;
            if (q == t->properties && t->n_props) {
                if (FORM_LIT(f, "{") < 0) return -1;
                for (int i = 0; i < t->n_props; i++) {
                    const Member *p = &t->props[i];
                    if (form_sep(f, i == 0, 0) < 0 || FORM_LIT(f, "\"") < 0 || form_name(f, i + 1, s + p->ks, p->ke - p->ks) < 0 ||
                        FORM_LIT(f, "\"") < 0 || form_sep(f, 0, 1) < 0)
                        return -1;
                    if ((rc = form_spec(f, i, s, p->vs, p->ve)) != 0) return rc;
                }
                if (FORM_LIT(f, "}") < 0) return -1;
            } else if (q == t->required && t->n_props) {
                if ((rc = form_required(f, t, pm->vs, pm->ve)) != 0) return rc;
            } else if (form_copy(f, s, pm->vs, pm->ve) < 0) {
                return -1;
            }
        }
        if (FORM_LIT(f, "}") < 0) return -1;
    }
    if (FORM_LIT(f, "}") < 0) return -1;
    /* the last literals */
    return push_slot(&f->full, f->full_lits, NULL, 0) < 0 || push_slot(&f->inl, f->inl_lits, NULL, 0) < 0 ? -1 : 0;
}

static PyObject *form_result(Form *f, int with_text) {
    PyObject *fl = PyList_AsTuple(f->full_lits), *fs = PyList_AsTuple(f->full_slots);
    PyObject *il = PyList_AsTuple(f->inl_lits), *is = PyList_AsTuple(f->inl_slots), *sp = PyList_AsTuple(f->specs);
    PyObject *text = with_text ? PyUnicode_DecodeUTF8(f->text.p ? f->text.p : "", f->text.len, "strict") : NULL;
    PyObject *r = NULL;
    if (fl && fs && il && is && sp && (text || !with_text))
        r = with_text ? PyTuple_Pack(6, fl, fs, il, is, sp, text) : PyTuple_Pack(5, fl, fs, il, is, sp);
    Py_XDECREF(fl), Py_XDECREF(fs), Py_XDECREF(il), Py_XDECREF(is), Py_XDECREF(sp), Py_XDECREF(text);
    return r;
}

/* compile_tool(text) -> ((full lits, full slots, inline lits, inline slots, spec texts),
 *                        (the same for the prompt form, + its text)) or None */
static PyObject *py_compile_tool(PyObject *mod, PyObject *args) {
    PyObject *text;
    if (!PyArg_ParseTuple(args, "U", &text)) return NULL;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    if (!s) { /* lone surrogates: Python's */
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    ToolText *t = malloc(sizeof(ToolText));
    if (!t) return PyErr_NoMemory();
    Form compact, prompt;
    PyObject *r = NULL;
    int ok = (form_init(&compact, 0) == 0) & (form_init(&prompt, 1) == 0); /* both, for form_free */
    int rc = ok ? ct_tool(t, s, n) : -1;
    if (rc == 0) rc = form_write(&compact, t);
    if (rc == 0) rc = form_write(&prompt, t);
    if (rc == 0) {
        PyObject *a = form_result(&compact, 0), *b = a ? form_result(&prompt, 1) : NULL;
        if (a && b) r = PyTuple_Pack(2, a, b);
        Py_XDECREF(a), Py_XDECREF(b);
    } else if (rc == CT_PYTHON && !PyErr_Occurred()) {
        r = Py_NewRef(Py_None);
    }
    form_free(&compact), form_free(&prompt);
    free(t);
    return r;
}

/* ------------------------------------------------------------------ module functions (tests) */

static PyObject *py_mix64(PyObject *mod, PyObject *args) {
    unsigned long long k, c;
    if (!PyArg_ParseTuple(args, "KK", &k, &c)) return NULL;
    return PyLong_FromUnsignedLongLong(mix64(k, c));
}

static PyObject *py_gen_name(PyObject *mod, PyObject *args) {
    unsigned long long key, idx;
    int lo, hi;
    if (!PyArg_ParseTuple(args, "KiiK", &key, &lo, &hi, &idx)) return NULL;
    if (lo < 1 || hi < lo || hi > 16) { PyErr_SetString(PyExc_ValueError, "lengths"); return NULL; }
    char out[16];
    int n = gen_name(key, lo, hi, idx, out);
    return PyUnicode_FromStringAndSize(out, n);
}

static PyMethodDef kernel_methods[] = {
    {"add_tool", (PyCFunction)kernel_add_tool, METH_VARARGS, "register a compiled tool; returns its id"},
    {"add_bad", (PyCFunction)kernel_add_bad, METH_VARARGS, "register a piece that is not a tool"},
    {"n_tools", (PyCFunction)kernel_n_tools, METH_NOARGS, "registered tools"},
    {"set_wrap", (PyCFunction)kernel_set_wrap, METH_VARARGS, "(head, tail, suffix) of wrapped prompts"},
    {"set_tokens", (PyCFunction)kernel_set_tokens, METH_VARARGS, "(eos id, max cache entries)"},
    {"set_bpe", (PyCFunction)kernel_set_bpe, METH_VARARGS, "(encoder, capsule): compiled BPE for cache misses"},
    {"add_tokens", (PyCFunction)kernel_add_tokens, METH_VARARGS, "cache the ids of fragments"},
    {"token_entries", (PyCFunction)kernel_token_entries, METH_NOARGS, "cached fragments"},
    {"trim_tokens", (PyCFunction)kernel_trim_tokens, METH_NOARGS, "empty the token cache when over its limit"},
    {"split_misses", (PyCFunction)kernel_split_misses, METH_VARARGS, "new chunks of uncached fragments"},
    {"add_chunks", (PyCFunction)kernel_add_chunks, METH_VARARGS, "cache chunks' ids"},
    {"join_misses", (PyCFunction)kernel_join_misses, METH_VARARGS, "cache fragments from their chunks"},
    {"parse", (PyCFunction)kernel_parse, METH_VARARGS, "parse a block's rows"},
    {NULL}};

static PyMethodDef parsed_methods[] = {
    {"info", (PyCFunction)parsed_info, METH_NOARGS, "per-row status, eligibility, tool ids, no-call flags"},
    {"plan", (PyCFunction)parsed_plan, METH_VARARGS, "output rows that need Python"},
    {"emit", (PyCFunction)parsed_emit, METH_VARARGS, "the output rows"},
    {"strip_gold", (PyCFunction)parsed_strip_gold, METH_VARARGS, "the irrelevance rows' tools JSON"},
    {NULL}};

static PyTypeObject KernelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hammer_core.data.compiled._fastprep.Kernel",
    .tp_basicsize = sizeof(Kernel),
    .tp_dealloc = (destructor)kernel_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Kernel(fn_key, param_key, pool_size, p, HEAD, MID, TAIL, NO_CALL_TARGET, '[]\\n')",
    .tp_methods = kernel_methods,
    .tp_init = (initproc)kernel_init,
    .tp_new = PyType_GenericNew,
};

static PyTypeObject ParsedType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hammer_core.data.compiled._fastprep.Parsed",
    .tp_basicsize = sizeof(Parsed),
    .tp_dealloc = (destructor)parsed_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "a parsed block (from Kernel.parse)",
    .tp_methods = parsed_methods,
};

static PyMethodDef module_methods[] = {
    {"mix64", py_mix64, METH_VARARGS, "masking.mix64_scalar"},
    {"gen_name", py_gen_name, METH_VARARGS, "NameGenerator name of one index: (key, lo, hi, index)"},
    {"hash_ids", py_hash_ids, METH_VARARGS, "row keys (BLAKE2b-64) and split flags (SHA-256) of an id column"},
    {"keys", py_keys, METH_VARARGS, "BLAKE2b-64 keys of prefix + id for a list of str ids"},
    {"compile_tool", py_compile_tool, METH_VARARGS, "the templates of a canonical tool text (None: Python's case)"},
    {NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "hammer_core.data.compiled._fastprep",
                                       "the prepare stage's hot path", -1, module_methods};

PyMODINIT_FUNC PyInit__fastprep(void) {
    if (PyType_Ready(&KernelType) < 0 || PyType_Ready(&ParsedType) < 0 || PyType_Ready(&BlobType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    Py_INCREF(&KernelType);
    if (PyModule_AddObject(m, "Kernel", (PyObject *)&KernelType) < 0) { Py_DECREF(&KernelType); Py_DECREF(m); return NULL; }
    PyModule_AddIntConstant(m, "VERSION", 1);
    return m;
}
