// The per-request arena: chained blocks, bump allocation, one release.
#include <stdlib.h>
#include <string.h>

#include "engine/base/base.h"

struct cm_arena_block {
    cm_arena_block *next;
    size_t size; // usable bytes after the header
    size_t used;
    max_align_t data[]; // aligned for any type
};

#define CM_ARENA_DEFAULT_BLOCK ((size_t)16 * 1024)
#define CM_ARENA_ALIGN         (_Alignof(max_align_t))

void cm_arena_init(cm_arena *a, size_t block_size, size_t cap)
{
    a->head = NULL;
    a->block_size = block_size != 0 ? block_size : CM_ARENA_DEFAULT_BLOCK;
    a->cap = cap;
    a->total = 0;
}

static cm_arena_block *cm_arena_grow(cm_arena *a, size_t need)
{
    size_t size = need > a->block_size ? need : a->block_size;
    if (size > SIZE_MAX - sizeof(cm_arena_block)) {
        return NULL;
    }
    if (a->cap != 0 && (size > a->cap || a->total > a->cap - size)) {
        return NULL;
    }
    cm_arena_block *b = malloc(sizeof(cm_arena_block) + size);
    if (b == NULL) {
        return NULL;
    }
    b->size = size;
    b->used = 0;
    // A block made for one oversized request goes behind the head, so the head's free
    // space remains available to later small requests.
    if (a->head != NULL && size > a->block_size) {
        b->next = a->head->next;
        a->head->next = b;
    } else {
        b->next = a->head;
        a->head = b;
    }
    a->total += size;
    return b;
}

void *cm_arena_alloc(cm_arena *a, size_t len)
{
    if (len > SIZE_MAX - CM_ARENA_ALIGN) {
        return NULL;
    }
    size_t need = (len + CM_ARENA_ALIGN - 1) & ~(CM_ARENA_ALIGN - 1);
    if (need == 0) {
        need = CM_ARENA_ALIGN;
    }
    cm_arena_block *b = a->head;
    if (b == NULL || b->size - b->used < need) {
        b = cm_arena_grow(a, need);
        if (b == NULL) {
            return NULL;
        }
    }
    void *p = (uint8_t *)b->data + b->used;
    b->used += need;
    return p;
}

uint8_t *cm_arena_memdup(cm_arena *a, cm_span s)
{
    uint8_t *p = cm_arena_alloc(a, s.len);
    if (p != NULL && s.len != 0) {
        memcpy(p, s.p, s.len);
    }
    return p;
}

void cm_arena_reset(cm_arena *a)
{
    // Keep the last block in the chain (the oldest) if it is a standard one: steady-state
    // requests then never call malloc.
    cm_arena_block *keep = NULL;
    cm_arena_block *b = a->head;
    while (b != NULL) {
        cm_arena_block *next = b->next;
        if (keep == NULL && next == NULL && b->size == a->block_size) {
            keep = b;
        } else {
            free(b);
        }
        b = next;
    }
    a->head = keep;
    a->total = 0;
    if (keep != NULL) {
        keep->used = 0;
        keep->next = NULL;
        a->total = keep->size;
    }
}

void cm_arena_cleanup(cm_arena *a)
{
    cm_arena_block *b = a->head;
    while (b != NULL) {
        cm_arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->total = 0;
}
