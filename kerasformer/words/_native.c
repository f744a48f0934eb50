/* Compiled inner loops of kerasformer.words (loaded with ctypes by native.py).

   Why C and not numpy: profiling `discover` on 5.7 M characters (py-spy, CPU time) put
   three quarters of it in np.sort of the packed n-gram keys (~50 ns a key: a comparison
   sort), in grouping the sorted keys once per order (a shift, a diff and a flatnonzero
   per order) and in merging chunk counts (searchsorted + masks). Here the keys are
   sorted by an LSD radix sort (the keys use bits*order <= 64 bits: five 11-bit passes for
   4-grams of 13-bit ids), every order is grouped in one linear pass, and a merge is one
   linear pass. Why not numba: importing it and compiling the kernels costs seconds in a
   fresh process, more than the whole discovery takes.

   The module is also a (method-less) Python extension so that setuptools builds and
   installs it like any other; the functions are plain C, called through ctypes. */
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(_WIN32)
#define EXPORT __declspec(dllexport)
#else
#define EXPORT __attribute__((visibility("default")))
#endif

/* Sort keys[0..n) (values below 2^key_bits) in place; tmp: n scratch slots.
   Returns 0, or -1 when out of memory. */
EXPORT int kf_sort(uint64_t *keys, uint64_t *tmp, int64_t n, int key_bits) {
    if (key_bits < 1) key_bits = 1;
    int passes = (key_bits + 10) / 11;
    int digit = (key_bits + passes - 1) / passes;
    size_t buckets = (size_t)1 << digit;
    uint64_t mask = buckets - 1;
    int64_t *hist = calloc((size_t)passes * buckets, sizeof(int64_t));
    if (!hist) return -1;
    for (int64_t i = 0; i < n; i++) {  /* every pass's histogram in one read */
        uint64_t k = keys[i];
        for (int p = 0; p < passes; p++) hist[p * buckets + ((k >> (p * digit)) & mask)]++;
    }
    uint64_t *src = keys, *dst = tmp;
    for (int p = 0; p < passes; p++) {
        int64_t *h = hist + p * buckets;
        int64_t sum = 0;
        int trivial = 0;
        for (size_t b = 0; b < buckets; b++) {
            int64_t c = h[b];
            if (c == n) trivial = 1; /* every key has this digit: nothing to move */
            h[b] = sum;
            sum += c;
        }
        if (trivial) continue;
        int shift = p * digit;
        for (int64_t i = 0; i < n; i++) {
            uint64_t k = src[i];
            dst[h[(k >> shift) & mask]++] = k;
        }
        uint64_t *t = src; src = dst; dst = t;
    }
    if (src != keys) memcpy(keys, src, (size_t)n * sizeof(uint64_t));
    free(hist);
    return 0;
}

/* Group sorted keys of `order` characters of `bits` bits each (first character in the
   high bits; zero from the first break on). For n in first..order, the distinct
   n-character prefixes whose n-th character is non-zero and their counts; `whole`: a key
   counts only as the n-gram of its own length (its non-zero characters).
   keys_out / counts_out NULL: only sizes[n - first] are set (to size the outputs). */
EXPORT void kf_group(const uint64_t *s, int64_t m, int bits, int order, int first, int whole,
                     int64_t *sizes, uint64_t **keys_out, int64_t **counts_out) {
    uint64_t cmask = ((uint64_t)1 << bits) - 1;
    int64_t start[65];
    for (int n = first; n <= order; n++) sizes[n - first] = 0;
    if (m == 0) return;
    if (whole) {
        int64_t run = 0;
        for (int64_t i = 1; i <= m; i++) {
            if (i < m && s[i] == s[run]) continue;
            uint64_t k = s[run];
            int len = 0;
            while (len < order && ((k >> (bits * (order - 1 - len))) & cmask)) len++;
            if (len >= first) {
                int64_t j = sizes[len - first]++;
                if (keys_out) {
                    keys_out[len - first][j] = k >> (bits * (order - len));
                    counts_out[len - first][j] = i - run;
                }
            }
            run = i;
        }
        return;
    }
    for (int n = first; n <= order; n++) start[n] = 0;
    for (int64_t i = 1; i <= m; i++) {
        int lcp = 0; /* characters shared with the previous key (all, past the end) */
        if (i < m) {
            uint64_t x = s[i] ^ s[i - 1];
            lcp = x ? order - 1 - (63 - __builtin_clzll(x)) / bits : order;
        }
        for (int n = lcp + 1 > first ? lcp + 1 : first; n <= order; n++) {
            uint64_t k = s[start[n]] >> (bits * (order - n));
            if (k & cmask) { /* the prefix ends in a character, not a break */
                int64_t j = sizes[n - first]++;
                if (keys_out) {
                    keys_out[n - first][j] = k;
                    counts_out[n - first][j] = i - start[n];
                }
            }
            start[n] = i;
        }
    }
}

/* Merge two (sorted unique keys, counts) into out (room for na + nb); returns its size. */
EXPORT int64_t kf_merge(const uint64_t *ak, const int64_t *ac, int64_t na, const uint64_t *bk,
                        const int64_t *bc, int64_t nb, uint64_t *ok, int64_t *oc) {
    int64_t i = 0, j = 0, o = 0;
    while (i < na && j < nb) {
        if (ak[i] < bk[j]) { ok[o] = ak[i]; oc[o++] = ac[i++]; }
        else if (bk[j] < ak[i]) { ok[o] = bk[j]; oc[o++] = bc[j++]; }
        else { ok[o] = ak[i]; oc[o++] = ac[i++] + bc[j++]; }
    }
    while (i < na) { ok[o] = ak[i]; oc[o++] = ac[i++]; }
    while (j < nb) { ok[o] = bk[j]; oc[o++] = bc[j++]; }
    return o;
}

/* The keys (see counting.start_keys) of the positions that start a 2-gram (two word
   characters: ids != 0), in order; returns their number. out: room for n. */
EXPORT int64_t kf_start_keys(const uint32_t *ids, int64_t n, int bits, int order, uint64_t *out) {
    int64_t m = 0;
    for (int64_t p = 0; p + 1 < n; p++) {
        if (!ids[p] || !ids[p + 1]) continue;
        uint64_t k = 0;
        int j = 0;
        for (; j < order && p + j < n && ids[p + j]; j++) k = (k << bits) | ids[p + j];
        out[m++] = k << (bits * (order - j));
    }
    return m;
}

/* out[id] += 1 for every id (out: room for max(ids) + 1, zeroed). */
EXPORT void kf_bincount(const uint32_t *ids, int64_t n, int64_t *out) {
    for (int64_t i = 0; i < n; i++) out[ids[i]]++;
}

/* Membership of an n-gram key in one KeySet of discovery.py (same layout): a bitmap, or an
   open-addressing table (Fibonacci hash, linear probing, 0 = empty). */
static int contains(uint64_t k, const void *set, int hash_bits) {
    if (hash_bits == 0) return (((const uint8_t *)set)[k >> 3] >> (k & 7)) & 1;
    const uint64_t *table = set;
    uint64_t mask = ((uint64_t)1 << hash_bits) - 1;
    for (uint64_t slot = (k * 0x9E3779B97F4A7C15ULL) >> (64 - hash_bits);; slot = (slot + 1) & mask) {
        if (table[slot] == k) return 1;
        if (!table[slot]) return 0;
    }
}

/* discovery.piece_bounds + the packing of the pieces, in one pass: characters stay joined
   where a solid n-gram (sets[n], n = 2..order; hash_bits[n] 0 = bitmap) covers both.
   A piece of <= order characters goes to short_keys (packed like a start key), a longer
   one to long_bounds as (start, end). Returns the number of short pieces; *n_long the
   number of long ones. Outputs: room for n (short) and 2n (long). */
EXPORT int64_t kf_pieces(const uint32_t *ids, int64_t n, int bits, int order, const void *const *sets,
                         const int *hash_bits, uint64_t *short_keys, int64_t *long_bounds, int64_t *n_long) {
    int64_t start = -1, reach = -1, ns = 0, nl = 0;
    for (int64_t p = 0; p < n; p++) {
        if (!ids[p]) continue;
        if (start < 0) start = p;
        uint64_t k = ids[p];
        for (int j = 1; j < order && p + j < n && ids[p + j]; j++) {
            k = (k << bits) | ids[p + j];
            if (p + j > reach && contains(k, sets[j + 1], hash_bits[j + 1])) reach = p + j;
        }
        if (reach > p) continue; /* joined to the next character */
        int64_t len = p + 1 - start;
        if (len <= order) {
            uint64_t key = 0;
            for (int64_t q = start; q <= p; q++) key = (key << bits) | ids[q];
            short_keys[ns++] = key << (bits * (order - len));
        } else {
            long_bounds[2 * nl] = start;
            long_bounds[2 * nl + 1] = p + 1;
            nl++;
        }
        start = -1;
    }
    *n_long = nl;
    return ns;
}

/* counting.code_slices: codes[start:end] of each (start, end) row, each followed by a
   newline, into out (room for the total length + k); returns the length written. */
EXPORT int64_t kf_slices(const uint32_t *codes, const int64_t *bounds, int64_t k, uint32_t *out) {
    int64_t o = 0;
    for (int64_t i = 0; i < k; i++) {
        for (int64_t p = bounds[2 * i]; p < bounds[2 * i + 1]; p++) out[o++] = codes[p];
        out[o++] = 10;
    }
    return o;
}

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
