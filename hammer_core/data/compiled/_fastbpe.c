/* hammer_core.data.compiled._fastbpe -- exact byte-level BPE encoding of short ASCII strings.
 *
 * A re-implementation of what Hugging Face `tokenizers` does in
 * `Tokenizer.encode(text, add_special_tokens=False)` for byte-level BPE tokenizers (GPT-2's
 * ByteLevel regex, or a Split on Qwen2's / Llama-3's regex followed by ByteLevel without
 * regex), restricted to ASCII text that contains no added token. Everything else is refused
 * per text (count -1) so that the caller tokenizes it with HF.
 *
 * The tables come from Python (hammer_core/data/compiled/fastbpe.py reads tokenizer.json):
 *   Encoder(byte_ids, merges, words, added, kind, ignore_merges, heap_threshold)
 *     byte_ids   bytes, 128 native int32: the vocab id of each ASCII byte's byte-level
 *                symbol, -1 when the vocab lacks it (texts with that byte are refused)
 *     merges     bytes, native int32 quadruples (id_a, id_b, rank, merged_id), one per
 *                distinct pair (the glue resolves duplicates the way HF does: last wins)
 *     words      list of (bytes, int): vocab entries spelled in ASCII bytes (used only with
 *                ignore_merges: a pre-token found here is emitted as that one id)
 *     added      list of bytes: contents of added tokens (texts containing one are refused)
 *     kind       0 = GPT-2 ByteLevel regex, 1 = Qwen2 split regex, 2 = Llama-3 split regex
 *     ignore_merges  bool
 *     heap_threshold pre-tokens longer than this go through HF's heap-based merge loop,
 *                shorter ones through a simple quadratic scan (same result)
 *
 *   Encoder.encode(texts) -> (ids: bytes, counts: bytes)   both native int32
 *   Encoder.pretokenize(text: str) -> list[str] | None      (for tests and debugging)
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- character classes */

enum { C_OTHER = 0, C_LETTER = 1, C_DIGIT = 2, C_SPACE = 3 };

static unsigned char CLS[128];

static void init_classes(void)
{
    for (int c = 0; c < 128; c++) {
        unsigned char k = C_OTHER;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
            k = C_LETTER;
        else if (c >= '0' && c <= '9')
            k = C_DIGIT;
        else if (c == ' ' || (c >= 0x09 && c <= 0x0d))  /* \t \n \v \f \r */
            k = C_SPACE;
        CLS[c] = k;
    }
}

#define IS_L(c) (CLS[(c)] == C_LETTER)
#define IS_N(c) (CLS[(c)] == C_DIGIT)
#define IS_S(c) (CLS[(c)] == C_SPACE)
#define IS_O(c) (CLS[(c)] == C_OTHER)
#define IS_CRLF(c) ((c) == '\r' || (c) == '\n')

enum { K_GPT2 = 0, K_QWEN2 = 1, K_LLAMA3 = 2 };

static inline Py_ssize_t run_of(const unsigned char *s, Py_ssize_t i, Py_ssize_t n, int cls)
{
    while (i < n && CLS[s[i]] == cls)
        i++;
    return i;
}

/* Whitespace starting at i (s[i] is whitespace) when no earlier alternative matched:
 * `\s+(?!\S)|\s+` -- the run minus its last char when a non-space follows and the run is
 * longer than one, else the whole run. */
static inline Py_ssize_t space_tail(const unsigned char *s, Py_ssize_t i, Py_ssize_t n)
{
    Py_ssize_t j = run_of(s, i, n, C_SPACE);
    if (j < n && j - i >= 2)
        return j - 1;
    return j;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static Py_ssize_t next_gpt2(const unsigned char *s, Py_ssize_t i, Py_ssize_t n)
{
    unsigned char c = s[i];
    if (c == '\'' && i + 1 < n) {
        unsigned char d = s[i + 1];
        if (d == 's' || d == 't' || d == 'm' || d == 'd')
            return i + 2;
        if (i + 2 < n) {
            unsigned char e = s[i + 2];
            if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l'))
                return i + 3;
        }
    }
    if (c == ' ' && i + 1 < n) {
        unsigned char d = s[i + 1];
        if (IS_L(d))
            return run_of(s, i + 1, n, C_LETTER);
        if (IS_N(d))
            return run_of(s, i + 1, n, C_DIGIT);
        if (IS_O(d))
            return run_of(s, i + 1, n, C_OTHER);
    }
    switch (CLS[c]) {
    case C_LETTER: return run_of(s, i, n, C_LETTER);
    case C_DIGIT: return run_of(s, i, n, C_DIGIT);
    case C_OTHER: return run_of(s, i, n, C_OTHER);
    default: return space_tail(s, i, n);
    }
}

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* Qwen2 / Llama-3:
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1 or 1,3}
 * | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static Py_ssize_t next_split(const unsigned char *s, Py_ssize_t i, Py_ssize_t n, int max_digits)
{
    unsigned char c = s[i];
    if (c == '\'' && i + 1 < n) {
        unsigned char d = lower(s[i + 1]);
        if (d == 's' || d == 't' || d == 'm' || d == 'd')
            return i + 2;
        if (i + 2 < n) {
            unsigned char e = lower(s[i + 2]);
            if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l'))
                return i + 3;
        }
    }
    if (IS_L(c))
        return run_of(s, i, n, C_LETTER);
    if (!IS_N(c) && !IS_CRLF(c) && i + 1 < n && IS_L(s[i + 1]))
        return run_of(s, i + 1, n, C_LETTER);
    if (IS_N(c)) {
        Py_ssize_t j = i + 1;
        while (j < n && j - i < max_digits && IS_N(s[j]))
            j++;
        return j;
    }
    if ((c == ' ' && i + 1 < n && IS_O(s[i + 1])) || IS_O(c)) {
        Py_ssize_t j = run_of(s, c == ' ' ? i + 1 : i, n, C_OTHER);
        while (j < n && IS_CRLF(s[j]))
            j++;
        return j;
    }
    /* c is whitespace: \s*[\r\n]+ takes the run up to its last CR/LF */
    Py_ssize_t j = run_of(s, i, n, C_SPACE);
    for (Py_ssize_t p = j - 1; p >= i; p--)
        if (IS_CRLF(s[p]))
            return p + 1;
    if (j < n && j - i >= 2)
        return j - 1;
    return j;
}

/* ---------------------------------------------------------------- the encoder object */

#define EMPTY_KEY UINT64_MAX

typedef struct {
    uint64_t key;     /* (uint64)a << 32 | b ; EMPTY_KEY when free */
    int32_t rank;
    int32_t id;
} MergeSlot;

typedef struct {
    uint64_t hash;    /* 0 when free (real hashes are forced non-zero) */
    Py_ssize_t off;
    Py_ssize_t len;
    int32_t id;
} WordSlot;

typedef struct {
    PyObject_HEAD
    int32_t byte_id[128];
    MergeSlot *merges;
    uint64_t merge_mask;
    WordSlot *words;
    uint64_t word_mask;
    char *word_blob;
    /* added tokens grouped by first byte: entries added_start[b] .. added_start[b+1]-1 */
    char *added_blob;
    Py_ssize_t *added_off;
    Py_ssize_t *added_len;
    Py_ssize_t added_start[129];
    Py_ssize_t n_added;
    int kind;
    int ignore_merges;
    Py_ssize_t heap_threshold;
} Encoder;

static inline uint64_t mix_key(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

static inline int merge_lookup(const Encoder *e, int32_t a, int32_t b, int32_t *rank, int32_t *id)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint64_t h = mix_key(key) & e->merge_mask;
    for (;;) {
        const MergeSlot *sl = &e->merges[h];
        if (sl->key == key) {
            *rank = sl->rank;
            *id = sl->id;
            return 1;
        }
        if (sl->key == EMPTY_KEY)
            return 0;
        h = (h + 1) & e->merge_mask;
    }
}

static inline uint64_t hash_bytes(const unsigned char *p, Py_ssize_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    h = mix_key(h ^ (uint64_t)n);
    return h ? h : 1;
}

static inline int word_lookup(const Encoder *e, const unsigned char *p, Py_ssize_t n, int32_t *id)
{
    if (e->words == NULL)
        return 0;
    uint64_t hv = hash_bytes(p, n);
    uint64_t h = hv & e->word_mask;
    for (;;) {
        const WordSlot *sl = &e->words[h];
        if (sl->hash == 0)
            return 0;
        if (sl->hash == hv && sl->len == n && memcmp(e->word_blob + sl->off, p, (size_t)n) == 0) {
            *id = sl->id;
            return 1;
        }
        h = (h + 1) & e->word_mask;
    }
}

static uint64_t table_size(Py_ssize_t n)
{
    uint64_t size = 16;
    while (size < (uint64_t)n * 2 + 1)
        size <<= 1;
    return size;
}

static void Encoder_dealloc(Encoder *self)
{
    PyMem_Free(self->merges);
    PyMem_Free(self->words);
    PyMem_Free(self->word_blob);
    PyMem_Free(self->added_blob);
    PyMem_Free(self->added_off);
    PyMem_Free(self->added_len);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Encoder_init(Encoder *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"byte_ids", "merges", "words", "added", "kind", "ignore_merges",
                             "heap_threshold", NULL};
    Py_buffer byte_ids, merges;
    PyObject *words, *added;
    int kind, ignore_merges;
    Py_ssize_t heap_threshold;
    int ok = -1;

    if (self->merges != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Encoder is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*OOipn", kwlist, &byte_ids, &merges, &words,
                                     &added, &kind, &ignore_merges, &heap_threshold))
        return -1;

    if (byte_ids.len != 128 * (Py_ssize_t)sizeof(int32_t)) {
        PyErr_SetString(PyExc_ValueError, "byte_ids must hold 128 int32");
        goto done;
    }
    if (merges.len % (4 * (Py_ssize_t)sizeof(int32_t)) != 0) {
        PyErr_SetString(PyExc_ValueError, "merges must hold int32 quadruples");
        goto done;
    }
    if (kind < K_GPT2 || kind > K_LLAMA3) {
        PyErr_SetString(PyExc_ValueError, "unknown regex kind");
        goto done;
    }
    if (heap_threshold < 0)
        heap_threshold = 0;
    memcpy(self->byte_id, byte_ids.buf, sizeof(self->byte_id));
    self->kind = kind;
    self->ignore_merges = ignore_merges;
    self->heap_threshold = heap_threshold;

    /* merges */
    {
        Py_ssize_t nm = merges.len / (4 * (Py_ssize_t)sizeof(int32_t));
        uint64_t size = table_size(nm);
        self->merges = PyMem_Malloc(size * sizeof(MergeSlot));
        if (self->merges == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        for (uint64_t i = 0; i < size; i++)
            self->merges[i].key = EMPTY_KEY;
        self->merge_mask = size - 1;
        const int32_t *q = merges.buf;
        for (Py_ssize_t m = 0; m < nm; m++, q += 4) {
            if (q[0] < 0 || q[1] < 0 || q[2] < 0 || q[3] < 0) {
                PyErr_SetString(PyExc_ValueError, "negative id or rank in merges");
                goto done;
            }
            uint64_t key = ((uint64_t)(uint32_t)q[0] << 32) | (uint32_t)q[1];
            uint64_t h = mix_key(key) & self->merge_mask;
            while (self->merges[h].key != EMPTY_KEY && self->merges[h].key != key)
                h = (h + 1) & self->merge_mask;
            self->merges[h].key = key;  /* a repeated pair: the last one wins */
            self->merges[h].rank = q[2];
            self->merges[h].id = q[3];
        }
    }

    /* words (ignore_merges) */
    if (words != Py_None) {
        PyObject *seq = PySequence_Fast(words, "words must be a sequence of (bytes, int)");
        if (seq == NULL)
            goto done;
        Py_ssize_t nw = PySequence_Fast_GET_SIZE(seq);
        Py_ssize_t total = 0;
        for (Py_ssize_t i = 0; i < nw; i++) {
            PyObject *it = PySequence_Fast_GET_ITEM(seq, i);
            if (!PyTuple_Check(it) || PyTuple_GET_SIZE(it) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(it, 0))) {
                Py_DECREF(seq);
                PyErr_SetString(PyExc_TypeError, "words must be a sequence of (bytes, int)");
                goto done;
            }
            total += PyBytes_GET_SIZE(PyTuple_GET_ITEM(it, 0));
        }
        uint64_t size = table_size(nw);
        self->words = PyMem_Calloc(size, sizeof(WordSlot));
        self->word_blob = PyMem_Malloc(total > 0 ? (size_t)total : 1);
        if (self->words == NULL || self->word_blob == NULL) {
            Py_DECREF(seq);
            PyErr_NoMemory();
            goto done;
        }
        self->word_mask = size - 1;
        Py_ssize_t off = 0;
        for (Py_ssize_t i = 0; i < nw; i++) {
            PyObject *it = PySequence_Fast_GET_ITEM(seq, i);
            PyObject *b = PyTuple_GET_ITEM(it, 0);
            long id = PyLong_AsLong(PyTuple_GET_ITEM(it, 1));
            if (id == -1 && PyErr_Occurred()) {
                Py_DECREF(seq);
                goto done;
            }
            if (id < 0 || id > INT32_MAX) {
                Py_DECREF(seq);
                PyErr_SetString(PyExc_ValueError, "word id out of range");
                goto done;
            }
            Py_ssize_t len = PyBytes_GET_SIZE(b);
            const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(b);
            int32_t existing;
            if (word_lookup(self, p, len, &existing))
                continue;  /* duplicates: keep the first (the glue never sends any) */
            memcpy(self->word_blob + off, p, (size_t)len);
            uint64_t hv = hash_bytes(p, len);
            uint64_t h = hv & self->word_mask;
            while (self->words[h].hash != 0)
                h = (h + 1) & self->word_mask;
            self->words[h].hash = hv;
            self->words[h].off = off;
            self->words[h].len = len;
            self->words[h].id = (int32_t)id;
            off += len;
        }
        Py_DECREF(seq);
    }

    /* added tokens, grouped by first byte (only ASCII ones can occur in ASCII text) */
    {
        PyObject *seq = PySequence_Fast(added, "added must be a sequence of bytes");
        if (seq == NULL)
            goto done;
        Py_ssize_t na = PySequence_Fast_GET_SIZE(seq), total = 0;
        for (Py_ssize_t i = 0; i < na; i++) {
            PyObject *b = PySequence_Fast_GET_ITEM(seq, i);
            if (!PyBytes_Check(b) || PyBytes_GET_SIZE(b) == 0) {
                Py_DECREF(seq);
                PyErr_SetString(PyExc_TypeError, "added must be a sequence of non-empty bytes");
                goto done;
            }
            total += PyBytes_GET_SIZE(b);
        }
        self->added_blob = PyMem_Malloc(total > 0 ? (size_t)total : 1);
        self->added_off = PyMem_Malloc((na > 0 ? (size_t)na : 1) * sizeof(Py_ssize_t));
        self->added_len = PyMem_Malloc((na > 0 ? (size_t)na : 1) * sizeof(Py_ssize_t));
        if (self->added_blob == NULL || self->added_off == NULL || self->added_len == NULL) {
            Py_DECREF(seq);
            PyErr_NoMemory();
            goto done;
        }
        Py_ssize_t k = 0, off = 0;
        for (int first = 0; first < 128; first++) {
            self->added_start[first] = k;
            for (Py_ssize_t i = 0; i < na; i++) {
                PyObject *b = PySequence_Fast_GET_ITEM(seq, i);
                const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(b);
                Py_ssize_t len = PyBytes_GET_SIZE(b);
                if (p[0] != first)
                    continue;
                int ascii = 1;
                for (Py_ssize_t j = 0; j < len; j++)
                    if (p[j] >= 0x80)
                        ascii = 0;
                if (!ascii)
                    continue;
                memcpy(self->added_blob + off, p, (size_t)len);
                self->added_off[k] = off;
                self->added_len[k] = len;
                off += len;
                k++;
            }
        }
        self->added_start[128] = k;
        self->n_added = k;
        Py_DECREF(seq);
    }
    ok = 0;

done:
    PyBuffer_Release(&byte_ids);
    PyBuffer_Release(&merges);
    return ok;
}

/* ---------------------------------------------------------------- BPE on one pre-token */

#define SHORT_MAX 256

/* Quadratic merge loop: repeatedly merge the adjacent pair of lowest rank (leftmost on a tie).
 * sym holds n ids; returns the new count. */
static Py_ssize_t bpe_short(const Encoder *e, int32_t *sym, Py_ssize_t n)
{
    int32_t rank[SHORT_MAX], nid[SHORT_MAX];
    for (Py_ssize_t i = 0; i + 1 < n; i++)
        if (!merge_lookup(e, sym[i], sym[i + 1], &rank[i], &nid[i]))
            rank[i] = INT32_MAX;
    while (n > 1) {
        int32_t best = INT32_MAX;
        Py_ssize_t bi = -1;
        for (Py_ssize_t i = 0; i + 1 < n; i++)
            if (rank[i] < best) {
                best = rank[i];
                bi = i;
            }
        if (bi < 0)
            break;
        sym[bi] = nid[bi];
        /* drop symbol bi+1 and pair bi+1 */
        memmove(&sym[bi + 1], &sym[bi + 2], (size_t)(n - bi - 2) * sizeof(int32_t));
        if (n - bi - 3 > 0) {
            memmove(&rank[bi + 1], &rank[bi + 2], (size_t)(n - bi - 3) * sizeof(int32_t));
            memmove(&nid[bi + 1], &nid[bi + 2], (size_t)(n - bi - 3) * sizeof(int32_t));
        }
        n--;
        if (bi + 1 < n && !merge_lookup(e, sym[bi], sym[bi + 1], &rank[bi], &nid[bi]))
            rank[bi] = INT32_MAX;
        if (bi > 0 && !merge_lookup(e, sym[bi - 1], sym[bi], &rank[bi - 1], &nid[bi - 1]))
            rank[bi - 1] = INT32_MAX;
    }
    return n;
}

/* HF's Word::merge_all without dropout, transcribed: a min-heap of (rank, pos) merges over a
 * doubly linked list of symbols; stale entries are skipped. */
typedef struct {
    int32_t rank;
    int32_t new_id;
    Py_ssize_t pos;
} HeapItem;

static inline int heap_less(const HeapItem *a, const HeapItem *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(HeapItem *h, Py_ssize_t *len, HeapItem it)
{
    Py_ssize_t i = (*len)++;
    while (i > 0) {
        Py_ssize_t p = (i - 1) / 2;
        if (!heap_less(&it, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = it;
}

static HeapItem heap_pop(HeapItem *h, Py_ssize_t *len)
{
    HeapItem top = h[0];
    HeapItem last = h[--(*len)];
    Py_ssize_t n = *len, i = 0;
    for (;;) {
        Py_ssize_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && heap_less(&h[c + 1], &h[c]))
            c++;
        if (!heap_less(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (n > 0)
        h[i] = last;
    return top;
}

/* returns the new count, or -1 on memory error */
static Py_ssize_t bpe_heap(const Encoder *e, int32_t *sym, Py_ssize_t n)
{
    if (n < 2)
        return n;
    Py_ssize_t *prev = malloc((size_t)n * sizeof(Py_ssize_t));
    Py_ssize_t *next = malloc((size_t)n * sizeof(Py_ssize_t));
    unsigned char *alive = malloc((size_t)n);
    /* n-1 initial entries, at most 2 per merge and at most n-1 merges */
    HeapItem *heap = malloc((size_t)(3 * n) * sizeof(HeapItem));
    if (!prev || !next || !alive || !heap) {
        free(prev);
        free(next);
        free(alive);
        free(heap);
        return -1;
    }
    Py_ssize_t hl = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        prev[i] = i - 1;
        next[i] = i + 1 < n ? i + 1 : -1;
        alive[i] = 1;
    }
    for (Py_ssize_t i = 0; i + 1 < n; i++) {
        HeapItem it;
        if (merge_lookup(e, sym[i], sym[i + 1], &it.rank, &it.new_id)) {
            it.pos = i;
            heap_push(heap, &hl, it);
        }
    }
    while (hl > 0) {
        HeapItem top = heap_pop(heap, &hl);
        Py_ssize_t p = top.pos;
        if (!alive[p] || next[p] < 0)
            continue;
        Py_ssize_t r = next[p];
        int32_t rank, id;
        if (!merge_lookup(e, sym[p], sym[r], &rank, &id) || id != top.new_id)
            continue;  /* expired entry */
        sym[p] = top.new_id;
        alive[r] = 0;
        next[p] = next[r];
        if (next[r] >= 0)
            prev[next[r]] = p;
        HeapItem it;
        if (prev[p] >= 0 && merge_lookup(e, sym[prev[p]], sym[p], &it.rank, &it.new_id)) {
            it.pos = prev[p];
            heap_push(heap, &hl, it);
        }
        if (next[p] >= 0 && merge_lookup(e, sym[p], sym[next[p]], &it.rank, &it.new_id)) {
            it.pos = p;
            heap_push(heap, &hl, it);
        }
    }
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i >= 0; i = next[i])
        sym[k++] = sym[i];
    free(prev);
    free(next);
    free(alive);
    free(heap);
    return k;
}

/* Encode one pre-token s[0..n) into out (room for n ids); returns the id count, -1 on error. */
static Py_ssize_t encode_piece(const Encoder *e, const unsigned char *s, Py_ssize_t n, int32_t *out)
{
    if (n == 0)
        return 0;
    if (e->ignore_merges) {
        int32_t id;
        if (word_lookup(e, s, n, &id)) {
            out[0] = id;
            return 1;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++)
        out[i] = e->byte_id[s[i]];
    if (n <= e->heap_threshold && n <= SHORT_MAX)
        return bpe_short(e, out, n);
    return bpe_heap(e, out, n);
}

static inline Py_ssize_t next_piece(const Encoder *e, const unsigned char *s, Py_ssize_t i, Py_ssize_t n)
{
    switch (e->kind) {
    case K_GPT2: return next_gpt2(s, i, n);
    case K_QWEN2: return next_split(s, i, n, 1);
    default: return next_split(s, i, n, 3);
    }
}

/* Is text s[0..n) handled? ASCII is checked by the caller. */
static int acceptable(const Encoder *e, const unsigned char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (e->byte_id[c] < 0)
            return 0;
        Py_ssize_t a = e->added_start[c], b = e->added_start[c + 1];
        for (Py_ssize_t k = a; k < b; k++) {
            Py_ssize_t len = e->added_len[k];
            if (len <= n - i && memcmp(s + i, e->added_blob + e->added_off[k], (size_t)len) == 0)
                return 0;
        }
    }
    return 1;
}

/* ASCII data of a str, or NULL (not ASCII / not ready); sets *n. */
static const unsigned char *ascii_data(PyObject *o, Py_ssize_t *n)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(o) < 0)
        return NULL;
#endif
    if (!PyUnicode_IS_ASCII(o))
        return NULL;
    *n = PyUnicode_GET_LENGTH(o);
    return (const unsigned char *)PyUnicode_DATA(o);
}

/* The ids of an accepted text s[0..n) into out (room for n ids): its pre-tokens encoded one
 * after the other; returns the id count, -1 when out of memory. */
static Py_ssize_t encode_text(const Encoder *e, const unsigned char *s, Py_ssize_t n, int32_t *out)
{
    Py_ssize_t len = 0;
    for (Py_ssize_t i = 0; i < n;) {
        Py_ssize_t j = next_piece(e, s, i, n);
        Py_ssize_t k = encode_piece(e, s + i, j - i, out + len);
        if (k < 0)
            return -1;
        len += k;
        i = j;
    }
    return len;
}

static PyObject *Encoder_encode(Encoder *self, PyObject *texts)
{
    PyObject *seq = PySequence_Fast(texts, "encode() takes a sequence of str");
    if (seq == NULL)
        return NULL;
    Py_ssize_t nt = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    int32_t *counts = PyMem_Malloc((nt > 0 ? (size_t)nt : 1) * sizeof(int32_t));
    Py_ssize_t cap = 1024, len = 0;
    int32_t *ids = PyMem_Malloc((size_t)cap * sizeof(int32_t));
    PyObject *result = NULL;
    if (counts == NULL || ids == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t t = 0; t < nt; t++) {
        PyObject *o = items[t];
        if (!PyUnicode_Check(o)) {
            PyErr_Format(PyExc_TypeError, "encode() takes str items, got %.100s", Py_TYPE(o)->tp_name);
            goto done;
        }
        Py_ssize_t n = 0;
        const unsigned char *s = ascii_data(o, &n);
        if (s == NULL) {
            if (PyErr_Occurred())
                goto done;
            counts[t] = -1;
            continue;
        }
        if (n > INT32_MAX || !acceptable(self, s, n)) {
            counts[t] = -1;
            continue;
        }
        if (len + n > cap) {
            while (len + n > cap)
                cap *= 2;
            int32_t *grown = PyMem_Realloc(ids, (size_t)cap * sizeof(int32_t));
            if (grown == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            ids = grown;
        }
        Py_ssize_t k = encode_text(self, s, n, ids + len);
        if (k < 0) {
            PyErr_NoMemory();
            goto done;
        }
        len += k;
        counts[t] = (int32_t)k;
    }
    {
        PyObject *a = PyBytes_FromStringAndSize((const char *)ids, len * (Py_ssize_t)sizeof(int32_t));
        PyObject *b = a ? PyBytes_FromStringAndSize((const char *)counts, nt * (Py_ssize_t)sizeof(int32_t)) : NULL;
        if (a && b)
            result = PyTuple_Pack(2, a, b);
        Py_XDECREF(a);
        Py_XDECREF(b);
    }
done:
    PyMem_Free(ids);
    PyMem_Free(counts);
    Py_DECREF(seq);
    return result;
}

/* The C API for other extensions (capsule "hammer_core.data.compiled._fastbpe._C_API", a function pointer):
 * the ids of text[0..n) into out (room for n ids); returns their number, -1 when the text is not
 * handled (non-ASCII, an added token's content, a byte without a symbol), -2 on error (Python
 * exception set). Callable without the GIL (no Python API but the error). Used by hammer_core.data.compiled._fastprep to tokenize its token-cache misses in place. */
static Py_ssize_t capi_encode(PyObject *enc, const char *text, Py_ssize_t n, int32_t *out)
{
    const Encoder *e = (const Encoder *)enc;
    const unsigned char *s = (const unsigned char *)text;
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] >= 0x80)
            return -1;
    if (n > INT32_MAX || !acceptable(e, s, n))
        return -1;
    Py_ssize_t k = encode_text(e, s, n, out);
    if (k < 0) {  /* the caller may not hold the GIL (_fastprep's emit) */
        PyGILState_STATE g = PyGILState_Ensure();
        PyErr_NoMemory();
        PyGILState_Release(g);
        return -2;
    }
    return k;
}

static PyObject *Encoder_pretokenize(Encoder *self, PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "pretokenize() takes a str");
        return NULL;
    }
    Py_ssize_t n = 0;
    const unsigned char *s = ascii_data(text, &n);
    if (s == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n;) {
        Py_ssize_t j = next_piece(self, s, i, n);
        PyObject *piece = PyUnicode_FromStringAndSize((const char *)s + i, j - i);
        if (piece == NULL || PyList_Append(out, piece) < 0) {
            Py_XDECREF(piece);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(piece);
        i = j;
    }
    return out;
}

static PyMethodDef Encoder_methods[] = {
    {"encode", (PyCFunction)Encoder_encode, METH_O,
     "encode(texts) -> (ids, counts): native int32 bytes; count -1 for a refused text."},
    {"pretokenize", (PyCFunction)Encoder_pretokenize, METH_O,
     "pretokenize(text) -> list of pre-token strings (None for non-ASCII text)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hammer_core.data.compiled._fastbpe.Encoder",
    .tp_basicsize = sizeof(Encoder),
    .tp_dealloc = (destructor)Encoder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Byte-level BPE tables (see the module source for the constructor arguments).",
    .tp_methods = Encoder_methods,
    .tp_init = (initproc)Encoder_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef fastbpe_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "hammer_core.data.compiled._fastbpe",
    .m_doc = "Exact byte-level BPE encoding of short ASCII strings (see hammer_core.data.compiled.fastbpe).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__fastbpe(void)
{
    init_classes();
    if (PyType_Ready(&EncoderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastbpe_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&EncoderType);
    if (PyModule_AddObject(m, "Encoder", (PyObject *)&EncoderType) < 0) {
        Py_DECREF(&EncoderType);
        Py_DECREF(m);
        return NULL;
    }
    PyObject *capi = PyCapsule_New((void *)capi_encode, "hammer_core.data.compiled._fastbpe._C_API", NULL);
    if (capi == NULL || PyModule_AddObject(m, "_C_API", capi) < 0) {
        Py_XDECREF(capi);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
