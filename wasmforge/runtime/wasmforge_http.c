/* wasmforge_http.c: the Open Inference Protocol (KServe v2) over wasi:http, for any model.
 *
 * Built as its own component (the world wasmforge:model/http-server in
 * wasmforge/component/wit/http.wit): it exports wasi:http/incoming-handler and imports the
 * model's wasmforge:model/inference, which `wasm-tools compose` plugs with the model's
 * component. It serves:
 *   GET  /v2/health/live, /v2/health/ready      200 while the instance is up
 *   GET  /v2                                     the server's metadata
 *   GET  /v2/models/<name>[/versions/<v>]        the model's metadata
 *   GET  /v2/models/<name>[/versions/<v>]/ready  200
 *   POST /v2/models/<name>[/versions/<v>]/infer  inference: a JSON body, or a JSON header of
 *        Inference-Header-Content-Length bytes followed by the inputs' raw bytes (the binary
 *        tensor extension); outputs as JSON data, or as raw bytes after the JSON when asked
 *        (binary_data_output, or an output's binary_data)
 * A bad request gets a 4xx and {"error": "..."} naming the problem; nothing a client sends
 * traps the instance.
 *
 * No wit-bindgen: the canonical-ABI glue for the few imported functions is declared below
 * (wasm32: a string or list is {ptr, len}; a result or option is a u8 case then its payload at
 * the payload's alignment; results that do not fit one core value are written at a
 * caller-given address). Lists the host returns are allocated with our cabi_realloc, and
 * freed here.
 */
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define WF_IMPORT(module, name) __attribute__((import_module(module), import_name(name)))
#define WF_HTTP "wasi:http/types@0.2.12"
#define WF_IO "wasi:io/streams@0.2.12"
#define WF_MODEL "wasmforge:model/inference@0.1.0"

typedef int32_t wf_handle;

/* ------------------------------------------------------ canonical-ABI imports */

void wf_request_method(wf_handle, void* ret) WF_IMPORT(WF_HTTP, "[method]incoming-request.method");
void wf_request_path(wf_handle, void* ret) WF_IMPORT(WF_HTTP, "[method]incoming-request.path-with-query");
wf_handle wf_request_headers(wf_handle) WF_IMPORT(WF_HTTP, "[method]incoming-request.headers");
void wf_request_consume(wf_handle, void* ret) WF_IMPORT(WF_HTTP, "[method]incoming-request.consume");
void wf_request_drop(wf_handle) WF_IMPORT(WF_HTTP, "[resource-drop]incoming-request");
void wf_fields_get(wf_handle, const char*, uint32_t, void* ret) WF_IMPORT(WF_HTTP, "[method]fields.get");
wf_handle wf_fields_new(void) WF_IMPORT(WF_HTTP, "[constructor]fields");
void wf_fields_append(wf_handle, const char*, uint32_t, const char*, uint32_t, void* ret)
    WF_IMPORT(WF_HTTP, "[method]fields.append");
void wf_fields_drop(wf_handle) WF_IMPORT(WF_HTTP, "[resource-drop]fields");
void wf_body_stream(wf_handle, void* ret) WF_IMPORT(WF_HTTP, "[method]incoming-body.stream");
wf_handle wf_body_finish(wf_handle) WF_IMPORT(WF_HTTP, "[static]incoming-body.finish");
void wf_trailers_drop(wf_handle) WF_IMPORT(WF_HTTP, "[resource-drop]future-trailers");
void wf_input_read(wf_handle, int64_t, void* ret) WF_IMPORT(WF_IO, "[method]input-stream.blocking-read");
void wf_input_drop(wf_handle) WF_IMPORT(WF_IO, "[resource-drop]input-stream");
wf_handle wf_response_new(wf_handle headers) WF_IMPORT(WF_HTTP, "[constructor]outgoing-response");
int32_t wf_response_status(wf_handle, int32_t) WF_IMPORT(WF_HTTP, "[method]outgoing-response.set-status-code");
void wf_response_body(wf_handle, void* ret) WF_IMPORT(WF_HTTP, "[method]outgoing-response.body");
void wf_outbody_write(wf_handle, void* ret) WF_IMPORT(WF_HTTP, "[method]outgoing-body.write");
void wf_outbody_finish(wf_handle, int32_t has_trailers, wf_handle trailers, void* ret)
    WF_IMPORT(WF_HTTP, "[static]outgoing-body.finish");
void wf_outparam_set(wf_handle, int32_t is_err, int32_t response, int32_t, int64_t, int32_t, int32_t, int32_t,
                     int32_t) WF_IMPORT(WF_HTTP, "[static]response-outparam.set");
void wf_output_write(wf_handle, const void*, uint32_t, void* ret)
    WF_IMPORT(WF_IO, "[method]output-stream.blocking-write-and-flush");
void wf_output_drop(wf_handle) WF_IMPORT(WF_IO, "[resource-drop]output-stream");
void wf_model_metadata(void* ret) WF_IMPORT(WF_MODEL, "metadata");
void wf_model_infer(const void* tensors, uint32_t n, void* ret) WF_IMPORT(WF_MODEL, "infer");

__attribute__((export_name("cabi_realloc")))
void* cabi_realloc(void* ptr, size_t old_size, size_t align, size_t new_size) {
  if (new_size == 0) return (void*)align;
  void* out = ptr && old_size ? realloc(ptr, new_size) : malloc(new_size);
  if (out == NULL) __builtin_trap();
  return out;
}

/* The canonical layouts this file reads and writes (see wasmforge_component.c). */
typedef struct { char* ptr; uint32_t len; } wf_str;
typedef struct { void* ptr; uint32_t len; } wf_list;
typedef struct { wf_str name; uint8_t datatype; wf_list shape; } wf_tensor_info;
typedef struct { wf_str name; wf_list inputs, outputs; } wf_model_info;
typedef struct { wf_str name; uint8_t datatype; wf_list shape; wf_list data; } wf_tensor;
typedef struct { uint8_t is_err; wf_list payload; } wf_infer_result;
typedef struct { uint8_t tag; int32_t handle; } wf_handle_result;   /* result<own<T>> */

/* ------------------------------------------------------ datatypes */

enum { DT_BOOL, DT_UINT8, DT_UINT16, DT_UINT32, DT_UINT64, DT_INT8, DT_INT16, DT_INT32, DT_INT64,
       DT_FP16, DT_FP32, DT_FP64, DT_COUNT };
static const char* const dt_names[DT_COUNT] = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
                                               "INT32", "INT64", "FP16", "FP32", "FP64"};
static const uint8_t dt_sizes[DT_COUNT] = {1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 4, 8};

static int dt_parse(const char* s, size_t n) {
  for (int d = 0; d < DT_COUNT; ++d)
    if (strlen(dt_names[d]) == n && memcmp(dt_names[d], s, n) == 0) return d;
  return -1;
}

static uint16_t f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xff, man = x & 0x7fffff;
  if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
  int e = (int)exp - 127 + 15;
  if (e >= 31) return (uint16_t)(sign | 0x7c00);
  if (e <= 0) {
    if (e < -10) return (uint16_t)sign;
    man |= 0x800000;
    uint32_t shift = (uint32_t)(14 - e), half = man >> shift, rest = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rest > mid || (rest == mid && (half & 1))) ++half;
    return (uint16_t)(sign | half);
  }
  uint32_t half = sign | ((uint32_t)e << 10) | (man >> 13), rest = man & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (half & 1))) ++half;
  return (uint16_t)half;
}

static float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, x;
  if (exp == 0) {
    if (man == 0) x = sign;
    else {
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) { man <<= 1; --exp; }
      x = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) x = sign | 0x7f800000 | (man << 13);
  else x = sign | ((exp + 127 - 15) << 23) | (man << 13);
  float f;
  memcpy(&f, &x, 4);
  return f;
}

/* ------------------------------------------------------ a growable byte buffer */

typedef struct { char* p; size_t n, cap; } buf;

static void buf_put(buf* b, const void* s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->n + n + 1) cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p) __builtin_trap();
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
}
static void buf_str(buf* b, const char* s) { buf_put(b, s, strlen(s)); }
/* Numbers as text, without libc's printf: it would link stdio, which imports WASI preview 1. */
static char* fmt_u(char* end, uint64_t v) {   /* writes backwards from end; returns the start */
  do { *--end = (char)('0' + v % 10); v /= 10; } while (v);
  return end;
}
static void buf_fmt_u(buf* b, uint64_t v) {
  char t[24], *s = fmt_u(t + sizeof(t), v);
  buf_put(b, s, (size_t)(t + sizeof(t) - s));
}
static void buf_fmt_i(buf* b, int64_t v) {
  if (v < 0) buf_put(b, "-", 1);
  buf_fmt_u(b, v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v);
}
static double pow10_of(int k) {   /* exact for |k| <= 22 */
  double p = 1, x = 10;
  for (unsigned n = (unsigned)(k < 0 ? -k : k); n; n >>= 1, x *= x) if (n & 1) p *= x;
  return k < 0 ? 1 / p : p;
}
/* A finite double with `digits` significant digits (9 round-trips a float), JSON's syntax:
 * 0.5, 1234, 1.5e-07. */
static void buf_fmt_f(buf* b, double f, int digits) {
  if (f == 0) { buf_str(b, signbit(f) ? "-0.0" : "0.0"); return; }
  if (f < 0) { buf_put(b, "-", 1); f = -f; }
  int e = (int)floor(log10(f));
  double scaled = f * pow10_of(digits - 1 - e);
  if (scaled >= pow10_of(digits)) { scaled /= 10; ++e; }
  else if (scaled < pow10_of(digits - 1)) { scaled *= 10; --e; }
  uint64_t m = (uint64_t)llround(scaled);
  if (m >= (uint64_t)pow10_of(digits)) { m /= 10; ++e; }
  char t[24], *s = fmt_u(t + sizeof(t), m);   /* `digits` digits */
  int n = digits;
  while (n > 1 && s[n - 1] == '0') --n;      /* trailing zeros go */
  if (e >= 0 && e < digits) {                /* plain: 1234, 12.5 */
    int whole = e + 1;
    if (n <= whole) { buf_put(b, s, (size_t)n); for (int z = n; z < whole; ++z) buf_put(b, "0", 1); }
    else { buf_put(b, s, (size_t)whole); buf_put(b, ".", 1); buf_put(b, s + whole, (size_t)(n - whole)); }
    return;
  }
  if (e < 0 && e >= -4) {                    /* 0.00125 */
    buf_str(b, "0.");
    for (int z = -1; z > e; --z) buf_put(b, "0", 1);
    buf_put(b, s, (size_t)n);
    return;
  }
  buf_put(b, s, 1);
  if (n > 1) { buf_put(b, ".", 1); buf_put(b, s + 1, (size_t)(n - 1)); }
  buf_put(b, e < 0 ? "e-" : "e+", 2);
  buf_fmt_u(b, (uint64_t)(e < 0 ? -e : e));
}

/* A JSON string literal of s[0..n). */
static void buf_json_str(buf* b, const char* s, size_t n) {
  buf_put(b, "\"", 1);
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') { buf_put(b, "\\", 1); buf_put(b, &s[i], 1); }
    else if (c < 0x20) { char t[7] = {'\\', 'u', '0', '0', "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 15], 0}; buf_str(b, t); }
    else buf_put(b, &s[i], 1);
  }
  buf_put(b, "\"", 1);
}

/* ------------------------------------------------------ responses */

typedef struct {
  int status;
  buf body;
  const char* content_type;
  long json_header;   /* >= 0: Inference-Header-Content-Length, the JSON part of a binary body */
  const char* allow;  /* 405: the methods the path takes */
} response;

static void respond_error(response* r, int status, const char* a, const char* b, const char* c) {
  buf msg = {0};
  buf_str(&msg, a);
  if (b) buf_str(&msg, b);
  if (c) buf_str(&msg, c);
  r->status = status;
  r->body.n = 0;
  buf_str(&r->body, "{\"error\":");
  buf_json_str(&r->body, msg.p, msg.n);
  buf_str(&r->body, "}");
  r->content_type = "application/json";
  r->json_header = -1;
  free(msg.p);
}

static void add_header(wf_handle fields, const char* name, const char* value) {
  struct { uint8_t tag; uint8_t err; } ret;
  wf_fields_append(fields, name, (uint32_t)strlen(name), value, (uint32_t)strlen(value), &ret);
}

static void send(wf_handle outparam, response* r) {
  wf_handle headers = wf_fields_new();
  char n[24];
  n[23] = '\0';
  add_header(headers, "content-type", r->content_type);
  add_header(headers, "content-length", fmt_u(n + 23, r->body.n));
  if (r->json_header >= 0) add_header(headers, "inference-header-content-length", fmt_u(n + 23, (uint64_t)r->json_header));
  if (r->allow) add_header(headers, "allow", r->allow);
  wf_handle resp = wf_response_new(headers);
  wf_response_status(resp, r->status);
  wf_handle_result body, stream;
  wf_response_body(resp, &body);
  wf_outparam_set(outparam, 0, resp, 0, 0, 0, 0, 0, 0);
  if (body.tag != 0) return;
  wf_outbody_write(body.handle, &stream);
  if (stream.tag == 0) {
    struct { uint8_t tag; uint8_t err_tag; int32_t err; } wret;
    for (size_t off = 0; off < r->body.n; off += 4096) {
      size_t len = r->body.n - off < 4096 ? r->body.n - off : 4096;
      wf_output_write(stream.handle, r->body.p + off, (uint32_t)len, &wret);
      if (wret.tag != 0) break;   /* the client went away */
    }
    wf_output_drop(stream.handle);
  }
  _Alignas(8) uint8_t fret[64];
  wf_outbody_finish(body.handle, 0, 0, fret);
}

/* ------------------------------------------------------ the request */

static char* request_header(wf_handle headers, const char* name, size_t* len) {
  wf_list values;
  wf_fields_get(headers, name, (uint32_t)strlen(name), &values);
  char* out = NULL;
  wf_list* v = values.ptr;
  for (uint32_t i = 0; i < values.len; ++i) {
    if (i == 0) {
      out = malloc(v[i].len + 1);
      memcpy(out, v[i].ptr, v[i].len);
      out[v[i].len] = '\0';
      *len = v[i].len;
    }
    if (v[i].len) free(v[i].ptr);
  }
  if (values.len) free(values.ptr);
  return out;
}

/* Reads the whole body into b; 0, or 413 when it passes `limit` bytes, or 400. */
static int read_body(wf_handle request, buf* b, size_t limit) {
  wf_handle_result body, stream;
  wf_request_consume(request, &body);
  if (body.tag != 0) return 400;
  wf_body_stream(body.handle, &stream);
  int status = stream.tag == 0 ? 0 : 400;
  while (status == 0) {
    struct { uint8_t tag; union { wf_list data; struct { uint8_t tag; int32_t error; } err; } u; } ret;
    wf_input_read(stream.handle, 1 << 16, &ret);
    if (ret.tag != 0) break;   /* closed: the whole body is read */
    if (b->n + ret.u.data.len > limit) status = 413;
    else buf_put(b, ret.u.data.ptr, ret.u.data.len);
    if (ret.u.data.len) free(ret.u.data.ptr);
  }
  if (stream.tag == 0) wf_input_drop(stream.handle);
  wf_trailers_drop(wf_body_finish(body.handle));
  return status;
}

/* ------------------------------------------------------ JSON: a small recursive-descent reader */

typedef struct { const char* s; size_t n, i; const char* err; } json;

static void jws(json* j) {
  while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' || j->s[j->i] == '\n' || j->s[j->i] == '\r')) ++j->i;
}
static int jpeek(json* j) { jws(j); return j->i < j->n ? j->s[j->i] : -1; }
static int jeat(json* j, char c) {
  if (jpeek(j) != c) return 0;
  ++j->i;
  return 1;
}
static int jfail(json* j, const char* why) {
  if (!j->err) j->err = jpeek(j) == -1 ? "malformed JSON: the text ends before the value does" : why;
  return 0;
}

/* A string: its raw span (escapes are kept; names and datatypes have none to decode). */
static int jstring(json* j, const char** s, size_t* n) {
  if (!jeat(j, '"')) return jfail(j, "malformed JSON: expected a string");
  size_t start = j->i;
  while (j->i < j->n && j->s[j->i] != '"') j->i += j->s[j->i] == '\\' ? 2 : 1;
  if (j->i >= j->n) return jfail(j, "malformed JSON: unterminated string");
  *s = j->s + start;
  *n = j->i - start;
  ++j->i;
  return 1;
}

static int jskip(json* j, int depth);

/* The key k[0..kn) is `name`. */
static int jkey(const char* k, size_t kn, const char* name) { return strlen(name) == kn && memcmp(k, name, kn) == 0; }

static int jliteral(json* j, const char* word) {
  size_t n = strlen(word);
  if (j->i + n > j->n || memcmp(j->s + j->i, word, n) != 0) return jfail(j, "malformed JSON: unexpected value");
  j->i += n;
  return 1;
}

static int jnumber_span(json* j, size_t* start, int* integer) {
  jws(j);
  *start = j->i;
  *integer = 1;
  if (j->i < j->n && j->s[j->i] == '-') ++j->i;
  size_t digits = j->i;
  while (j->i < j->n) {
    char c = j->s[j->i];
    if (c >= '0' && c <= '9') ++j->i;
    else if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') { *integer = 0; ++j->i; }
    else break;
  }
  return j->i > digits ? 1 : jfail(j, "malformed JSON: expected a number");
}

/* One object, with j at each value in turn: on_key(j, key, key_len, ctx) returns 1 when it
   read the value, 0 on an error (j->err set), or -1 for a key it does not know, whose value
   is then skipped. not_object: the error when the value is no object. */
typedef int (*jon_key)(json* j, const char* k, size_t kn, void* ctx);
static int jobject(json* j, const char* not_object, jon_key on_key, void* ctx) {
  const char* k;
  size_t kn;
  if (!jeat(j, '{')) return jfail(j, not_object);
  if (jeat(j, '}')) return 1;
  do {
    if (!jstring(j, &k, &kn) || !jeat(j, ':')) return jfail(j, "malformed JSON: expected \"key\": value");
    int read = on_key(j, k, kn, ctx);
    if (read == 0 || (read < 0 && !jskip(j, 0))) return 0;
  } while (jeat(j, ','));
  return jeat(j, '}') ? 1 : jfail(j, "malformed JSON: expected , or }");
}

/* One array, with j at each item in turn: on_item(j, ctx) reads it, or returns 0 on an error. */
typedef int (*jon_item)(json* j, void* ctx);
static int jarray(json* j, const char* not_array, jon_item on_item, void* ctx) {
  if (!jeat(j, '[')) return jfail(j, not_array);
  if (jeat(j, ']')) return 1;
  do { if (!on_item(j, ctx)) return 0; } while (jeat(j, ','));
  return jeat(j, ']') ? 1 : jfail(j, "malformed JSON: expected , or ]");
}

static int jskip_value(json* j, const char* k, size_t kn, void* depth) {
  (void)k; (void)kn;
  return jskip(j, *(int*)depth);
}
static int jskip_item(json* j, void* depth) { return jskip(j, *(int*)depth); }

static int jskip(json* j, int depth) {
  if (depth > 64) return jfail(j, "JSON nested too deeply");
  int c = jpeek(j);
  const char* s;
  size_t n;
  int integer, inner = depth + 1;
  if (c == '"') return jstring(j, &s, &n);
  if (c == '{') return jobject(j, "", jskip_value, &inner);
  if (c == '[') return jarray(j, "", jskip_item, &inner);
  if (c == 't') return jliteral(j, "true");
  if (c == 'f') return jliteral(j, "false");
  if (c == 'n') return jliteral(j, "null");
  return jnumber_span(j, &n, &integer);
}

static int jbool(json* j, int* out) {
  int c = jpeek(j);
  if (c == 't') { *out = 1; return jliteral(j, "true"); }
  if (c == 'f') { *out = 0; return jliteral(j, "false"); }
  return jfail(j, "expected true or false");
}

static int juint(json* j, uint64_t* out) {
  size_t start;
  int integer;
  if (!jnumber_span(j, &start, &integer) || !integer || j->s[start] == '-') return jfail(j, "expected a non-negative integer");
  *out = strtoull(j->s + start, NULL, 10);
  return 1;
}

/* ------------------------------------------------------ the inference request */

#define MAX_TENSORS 64
#define MAX_DIMS 8

typedef struct {
  const char* name; size_t name_len;
  int datatype;                 /* -1: not given */
  uint32_t shape[MAX_DIMS]; uint32_t ndim; int has_shape;
  size_t data_at; int has_data; /* where the "data" value starts */
  long binary_size;             /* parameters.binary_data_size, or -1 */
  uint8_t* bytes; size_t nbytes;
} req_input;

typedef struct { const char* name; size_t name_len; int binary; } req_output;

typedef struct {
  req_input in[MAX_TENSORS]; uint32_t n_in;
  req_output out[MAX_TENSORS]; uint32_t n_out;
  int binary_output;
  const char* id; size_t id_len;
} infer_request;

/* parameters: each pointer is the field this object may set, or NULL where it may not */
typedef struct { long* binary_size; int* binary_data; int* binary_output; } req_parameters;

static int parameters_key(json* j, const char* k, size_t kn, void* ctx) {
  req_parameters* p = ctx;
  uint64_t v;
  if (p->binary_size && jkey(k, kn, "binary_data_size")) {
    if (!juint(j, &v)) return jfail(j, "binary_data_size must be a non-negative integer");
    *p->binary_size = (long)v;
    return 1;
  }
  if (p->binary_data && jkey(k, kn, "binary_data"))
    return jbool(j, p->binary_data) ? 1 : jfail(j, "binary_data must be true or false");
  if (p->binary_output && jkey(k, kn, "binary_data_output"))
    return jbool(j, p->binary_output) ? 1 : jfail(j, "binary_data_output must be true or false");
  return -1;
}

static int parse_parameters(json* j, long* binary_size, int* binary_data, int* binary_output) {
  req_parameters p = {binary_size, binary_data, binary_output};
  return jobject(j, "\"parameters\" must be an object", parameters_key, &p);
}

static int shape_item(json* j, void* ctx) {
  req_input* in = ctx;
  uint64_t v;
  if (in->ndim == MAX_DIMS) return jfail(j, "an input's shape has more than 8 dimensions");
  if (!juint(j, &v) || v > 0xffffffffu) return jfail(j, "an input's \"shape\" must be an array of integers");
  in->shape[in->ndim++] = (uint32_t)v;
  return 1;
}

static int input_key(json* j, const char* k, size_t kn, void* ctx) {
  req_input* in = ctx;
  if (jkey(k, kn, "name"))
    return jstring(j, &in->name, &in->name_len) ? 1 : jfail(j, "an input's \"name\" must be a string");
  if (jkey(k, kn, "datatype")) {
    const char* d;
    size_t dn;
    if (!jstring(j, &d, &dn)) return jfail(j, "an input's \"datatype\" must be a string");
    in->datatype = dt_parse(d, dn);
    return in->datatype >= 0 ? 1 : jfail(j, "unknown datatype: the model's tensors use BOOL, UINT8..UINT64, "
                                            "INT8..INT64, FP16, FP32 or FP64");
  }
  if (jkey(k, kn, "shape")) {
    in->has_shape = 1;
    return jarray(j, "an input's \"shape\" must be an array of integers", shape_item, in);
  }
  if (jkey(k, kn, "data")) {
    jws(j);
    in->data_at = j->i;
    in->has_data = 1;
    return jskip(j, 0);
  }
  if (jkey(k, kn, "parameters")) return parse_parameters(j, &in->binary_size, NULL, NULL);
  return -1;
}

static int output_key(json* j, const char* k, size_t kn, void* ctx) {
  req_output* out = ctx;
  if (jkey(k, kn, "name"))
    return jstring(j, &out->name, &out->name_len) ? 1 : jfail(j, "an output's \"name\" must be a string");
  if (jkey(k, kn, "parameters")) return parse_parameters(j, NULL, &out->binary, NULL);
  return -1;
}

static int input_item(json* j, void* ctx) {
  infer_request* r = ctx;
  if (r->n_in == MAX_TENSORS) return jfail(j, "more than 64 inputs");
  req_input* in = &r->in[r->n_in++];
  memset(in, 0, sizeof(*in));
  in->datatype = -1;
  in->binary_size = -1;
  return jobject(j, "each of \"inputs\" must be an object", input_key, in);
}

static int output_item(json* j, void* ctx) {
  infer_request* r = ctx;
  if (r->n_out == MAX_TENSORS) return jfail(j, "more than 64 outputs");
  req_output* out = &r->out[r->n_out++];
  memset(out, 0, sizeof(*out));
  return jobject(j, "each of \"outputs\" must be an object", output_key, out);
}

typedef struct { infer_request* r; int seen_inputs; } request_ctx;

static int request_key(json* j, const char* k, size_t kn, void* ctx) {
  request_ctx* c = ctx;
  if (jkey(k, kn, "inputs")) {
    c->seen_inputs = 1;
    return jarray(j, "\"inputs\" must be an array", input_item, c->r);
  }
  if (jkey(k, kn, "outputs")) return jarray(j, "\"outputs\" must be an array", output_item, c->r);
  if (jkey(k, kn, "id")) return jstring(j, &c->r->id, &c->r->id_len) ? 1 : jfail(j, "\"id\" must be a string");
  if (jkey(k, kn, "parameters")) return parse_parameters(j, NULL, NULL, &c->r->binary_output);
  return -1;
}

static int parse_request(json* j, infer_request* r) {
  request_ctx c = {r, 0};
  memset(r, 0, sizeof(*r));
  if (!jobject(j, "malformed JSON: the body must be an object with \"inputs\"", request_key, &c)) return 0;
  if (jpeek(j) != -1) return jfail(j, "malformed JSON: text after the object");
  if (!c.seen_inputs) j->err = "the request has no \"inputs\"";
  return c.seen_inputs;
}

/* One JSON value of `data` (nested arrays flattened, row-major) into in->bytes. */
static int read_values(json* j, req_input* in, size_t* count, size_t want, int depth) {
  if (depth > MAX_DIMS + 1) return jfail(j, "\"data\" is nested deeper than its shape");
  int c = jpeek(j);
  if (c == '[') {
    ++j->i;
    if (jeat(j, ']')) return 1;
    do { if (!read_values(j, in, count, want, depth + 1)) return 0; } while (jeat(j, ','));
    return jeat(j, ']') ? 1 : jfail(j, "malformed JSON: expected , or ]");
  }
  if (*count >= want) { ++*count; return jskip(j, 0); }   /* counted, then reported */
  uint8_t* at = in->bytes + *count * dt_sizes[in->datatype];
  ++*count;
  if (in->datatype == DT_BOOL) {
    int b;
    if (c == 't' || c == 'f') { if (!jbool(j, &b)) return 0; }
    else { uint64_t v; if (!juint(j, &v) || v > 1) return jfail(j, "BOOL data must be true, false, 0 or 1"); b = (int)v; }
    *at = (uint8_t)b;
    return 1;
  }
  size_t start;
  int integer;
  if (c != '-' && (c < '0' || c > '9')) return jfail(j, "\"data\" must hold numbers, nested in arrays");
  if (!jnumber_span(j, &start, &integer)) return 0;
  const char* s = j->s + start;
  switch (in->datatype) {
    case DT_FP16: { uint16_t h = f32_to_f16(strtof(s, NULL)); memcpy(at, &h, 2); return 1; }
    case DT_FP32: { float f = strtof(s, NULL); memcpy(at, &f, 4); return 1; }
    case DT_FP64: { double d = strtod(s, NULL); memcpy(at, &d, 8); return 1; }
    default: break;
  }
  if (!integer) return jfail(j, "integer data must be whole numbers");
  int64_t v = strtoll(s, NULL, 10);
  uint64_t u = strtoull(s, NULL, 10);
  switch (in->datatype) {
    case DT_INT8: { int8_t x = (int8_t)v; memcpy(at, &x, 1); break; }
    case DT_INT16: { int16_t x = (int16_t)v; memcpy(at, &x, 2); break; }
    case DT_INT32: { int32_t x = (int32_t)v; memcpy(at, &x, 4); break; }
    case DT_INT64: memcpy(at, &v, 8); break;
    case DT_UINT8: { uint8_t x = (uint8_t)u; memcpy(at, &x, 1); break; }
    case DT_UINT16: { uint16_t x = (uint16_t)u; memcpy(at, &x, 2); break; }
    case DT_UINT32: { uint32_t x = (uint32_t)u; memcpy(at, &x, 4); break; }
    default: memcpy(at, &u, 8); break;
  }
  return 1;
}

/* ------------------------------------------------------ responses' bodies */

static void json_tensor_info(buf* b, const wf_tensor_info* t) {
  buf_str(b, "{\"name\":");
  buf_json_str(b, t->name.ptr, t->name.len);
  buf_str(b, ",\"datatype\":\"");
  buf_str(b, t->datatype < DT_COUNT ? dt_names[t->datatype] : "BYTES");
  buf_str(b, "\",\"shape\":[");
  for (uint32_t d = 0; d < t->shape.len; ++d) {
    if (d) buf_str(b, ",");
    buf_fmt_u(b, ((uint32_t*)t->shape.ptr)[d]);
  }
  buf_str(b, "]}");
}

static void json_values(buf* b, const wf_tensor* t) {
  size_t n = t->data.len / dt_sizes[t->datatype];
  const uint8_t* p = t->data.ptr;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* at = p + i * dt_sizes[t->datatype];
    double f = 0;
    int digits = 0;
    if (i) buf_put(b, ",", 1);
    switch (t->datatype) {
      case DT_BOOL: buf_str(b, *at ? "true" : "false"); break;
      case DT_INT8: buf_fmt_i(b, *(const int8_t*)at); break;
      case DT_INT16: { int16_t x; memcpy(&x, at, 2); buf_fmt_i(b, x); break; }
      case DT_INT32: { int32_t x; memcpy(&x, at, 4); buf_fmt_i(b, x); break; }
      case DT_INT64: { int64_t x; memcpy(&x, at, 8); buf_fmt_i(b, x); break; }
      case DT_UINT8: buf_fmt_u(b, *at); break;
      case DT_UINT16: { uint16_t x; memcpy(&x, at, 2); buf_fmt_u(b, x); break; }
      case DT_UINT32: { uint32_t x; memcpy(&x, at, 4); buf_fmt_u(b, x); break; }
      case DT_UINT64: { uint64_t x; memcpy(&x, at, 8); buf_fmt_u(b, x); break; }
      case DT_FP16: { uint16_t h; memcpy(&h, at, 2); f = f16_to_f32(h); digits = 5; break; }
      case DT_FP32: { float x; memcpy(&x, at, 4); f = x; digits = 9; break; }
      default: memcpy(&f, at, 8); digits = 17; break;
    }
    if (digits) {
      if (f != f || f - f != 0) buf_str(b, "null");   /* JSON has no NaN or infinity */
      else buf_fmt_f(b, f, digits);
    }
  }
}

/* ------------------------------------------------------ routes */

static wf_model_info model;
static size_t model_input_bytes;   /* all the model's inputs, in bytes */

static void model_metadata_json(buf* b) {
  buf_str(b, "{\"name\":");
  buf_json_str(b, model.name.ptr, model.name.len);
  buf_str(b, ",\"versions\":[\"1\"],\"platform\":\"wasmforge\",\"inputs\":[");
  for (uint32_t i = 0; i < model.inputs.len; ++i) {
    if (i) buf_str(b, ",");
    json_tensor_info(b, (wf_tensor_info*)model.inputs.ptr + i);
  }
  buf_str(b, "],\"outputs\":[");
  for (uint32_t i = 0; i < model.outputs.len; ++i) {
    if (i) buf_str(b, ",");
    json_tensor_info(b, (wf_tensor_info*)model.outputs.ptr + i);
  }
  buf_str(b, "]}");
}

static const wf_tensor_info* model_input(const char* name, size_t n) {
  const wf_tensor_info* t = model.inputs.ptr;
  for (uint32_t i = 0; i < model.inputs.len; ++i)
    if (t[i].name.len == n && memcmp(t[i].name.ptr, name, n) == 0) return &t[i];
  return NULL;
}

static void buf_shape(buf* b, const uint32_t* dims, uint32_t n) {
  buf_put(b, "[", 1);
  for (uint32_t d = 0; d < n; ++d) {
    if (d) buf_put(b, ", ", 2);
    buf_fmt_u(b, dims[d]);
  }
  buf_put(b, "]", 1);
}

static void free_infer_result(wf_infer_result* r) {
  if (r->is_err) { if (r->payload.len) free(r->payload.ptr); return; }
  wf_tensor* ts = r->payload.ptr;
  for (uint32_t k = 0; k < r->payload.len; ++k) {
    if (ts[k].name.len) free(ts[k].name.ptr);
    if (ts[k].shape.len) free(ts[k].shape.ptr);
    if (ts[k].data.len) free(ts[k].data.ptr);
  }
  if (r->payload.len) free(ts);
}

static void infer(response* res, buf* body, size_t json_len) {
  static infer_request req;
  json j = {body->p, json_len, 0, NULL};
  if (!parse_request(&j, &req)) { respond_error(res, 400, j.err, NULL, NULL); return; }
  size_t binary_at = json_len;
  wf_tensor tensors[MAX_TENSORS];
  uint32_t shapes[MAX_TENSORS][MAX_DIMS];
  int status = 0;
  buf msg = {0};
  for (uint32_t k = 0; k < req.n_in && !status; ++k) {
    req_input* in = &req.in[k];
    msg.n = 0;
    buf_str(&msg, "input '");
    buf_put(&msg, in->name ? in->name : "", in->name_len > 64 ? 64 : in->name_len);
    buf_str(&msg, "': ");
    if (!in->name) { respond_error(res, 400, "an input has no \"name\"", NULL, NULL); status = 400; break; }
    if (in->datatype < 0 || !in->has_shape) {
      respond_error(res, 400, msg.p, "\"datatype\" and \"shape\" are required", NULL); status = 400; break;
    }
    const wf_tensor_info* info = model_input(in->name, in->name_len);
    if (!info) {
      msg.n = 0;
      buf_str(&msg, "no input named '");
      buf_put(&msg, in->name, in->name_len > 64 ? 64 : in->name_len);
      buf_str(&msg, "': GET /v2/models/");
      buf_put(&msg, model.name.ptr, model.name.len);
      buf_str(&msg, " lists the model's inputs");
      respond_error(res, 400, msg.p, NULL, NULL); status = 400; break;
    }
    if (in->datatype != info->datatype) {
      buf_str(&msg, "datatype ");
      buf_str(&msg, dt_names[in->datatype]);
      buf_str(&msg, ", the model takes ");
      buf_str(&msg, info->datatype < DT_COUNT ? dt_names[info->datatype] : "another");
      respond_error(res, 400, msg.p, NULL, NULL); status = 400; break;
    }
    int same = in->ndim == info->shape.len;
    for (uint32_t d = 0; same && d < in->ndim; ++d) same = in->shape[d] == ((uint32_t*)info->shape.ptr)[d];
    if (!same) {
      buf_str(&msg, "shape ");
      buf_shape(&msg, in->shape, in->ndim);
      buf_str(&msg, ", the model takes ");
      buf_shape(&msg, info->shape.ptr, info->shape.len);
      respond_error(res, 400, msg.p, NULL, NULL); status = 400; break;
    }
    uint64_t count = 1;
    for (uint32_t d = 0; d < in->ndim; ++d) count *= in->shape[d];
    in->nbytes = (size_t)(count * dt_sizes[in->datatype]);
    in->bytes = malloc(in->nbytes ? in->nbytes : 1);
    if (!in->bytes) { respond_error(res, 500, msg.p, "out of memory", NULL); status = 500; break; }
    if (in->binary_size >= 0) {
      if ((size_t)in->binary_size != in->nbytes) {
        respond_error(res, 400, msg.p, "binary_data_size does not match its shape and datatype", NULL); status = 400; break;
      }
      if (body->n - binary_at < in->nbytes) {
        respond_error(res, 400, msg.p, "the body ends before its binary data", NULL); status = 400; break;
      }
      memcpy(in->bytes, body->p + binary_at, in->nbytes);
      binary_at += in->nbytes;
    } else if (in->has_data) {
      json d = {body->p, json_len, in->data_at, NULL};
      size_t got = 0;
      if (!read_values(&d, in, &got, (size_t)count, 0)) { respond_error(res, 400, msg.p, d.err, NULL); status = 400; break; }
      if (got != count) {
        buf_str(&msg, "\"data\" holds ");
        buf_fmt_u(&msg, got);
        buf_str(&msg, " values, its shape ");
        buf_fmt_u(&msg, count);
        respond_error(res, 400, msg.p, NULL, NULL); status = 400; break;
      }
    } else { respond_error(res, 400, msg.p, "no \"data\" and no binary_data_size", NULL); status = 400; break; }
    memcpy(shapes[k], in->shape, sizeof(shapes[k]));
    tensors[k] = (wf_tensor){{(char*)in->name, (uint32_t)in->name_len}, (uint8_t)in->datatype,
                             {shapes[k], in->ndim}, {in->bytes, (uint32_t)in->nbytes}};
  }
  if (!status && binary_at != body->n)
    respond_error(res, 400, "the body has binary data that no input's binary_data_size accounts for", NULL, NULL), status = 400;
  for (uint32_t k = 0; !status && k < req.n_out; ++k) {
    uint32_t o = 0;
    wf_tensor_info* outs = model.outputs.ptr;
    while (o < model.outputs.len && !(outs[o].name.len == req.out[k].name_len &&
                                      !memcmp(outs[o].name.ptr, req.out[k].name, req.out[k].name_len))) ++o;
    if (o == model.outputs.len) {
      msg.n = 0;
      buf_str(&msg, "no output named '");
      buf_put(&msg, req.out[k].name ? req.out[k].name : "", req.out[k].name_len > 64 ? 64 : req.out[k].name_len);
      buf_str(&msg, "'");
      respond_error(res, 400, msg.p, NULL, NULL);
      status = 400;
    }
  }
  wf_infer_result r = {0};
  if (!status) {
    wf_model_infer(tensors, req.n_in, &r);
    if (r.is_err) {
      buf m = {0};
      buf_put(&m, r.payload.ptr, r.payload.len);
      /* the model's own failure is the server's; a request it refuses is the client's */
      respond_error(res, strncmp(m.p, "the model failed", 16) == 0 ? 500 : 400, m.p, NULL, NULL);
      free(m.p);
      status = 1;
    }
  }
  for (uint32_t k = 0; k < req.n_in; ++k) free(req.in[k].bytes);
  free(msg.p);
  if (status) { free_infer_result(&r); return; }

  buf* b = &res->body;
  buf bin = {0};
  wf_tensor* outs = r.payload.ptr;
  buf_str(b, "{\"model_name\":");
  buf_json_str(b, model.name.ptr, model.name.len);
  buf_str(b, ",\"model_version\":\"1\"");
  if (req.id) { buf_str(b, ",\"id\":\""); buf_put(b, req.id, req.id_len); buf_str(b, "\""); }
  buf_str(b, ",\"outputs\":[");
  int first = 1;
  for (uint32_t o = 0; o < r.payload.len; ++o) {
    int binary = req.binary_output, wanted = req.n_out == 0;
    for (uint32_t k = 0; k < req.n_out; ++k)
      if (req.out[k].name_len == outs[o].name.len && !memcmp(req.out[k].name, outs[o].name.ptr, outs[o].name.len)) {
        wanted = 1;
        binary |= req.out[k].binary;
      }
    if (!wanted) continue;
    if (!first) buf_str(b, ",");
    first = 0;
    wf_tensor_info info = {outs[o].name, outs[o].datatype, outs[o].shape};
    json_tensor_info(b, &info);
    b->n -= 1;   /* reopen the object */
    if (binary) {
      buf_str(b, ",\"parameters\":{\"binary_data_size\":");
      buf_fmt_u(b, outs[o].data.len);
      buf_str(b, "}}");
      buf_put(&bin, outs[o].data.ptr, outs[o].data.len);
    } else {
      buf_str(b, ",\"data\":[");
      json_values(b, &outs[o]);
      buf_str(b, "]}");
    }
  }
  buf_str(b, "]}");
  if (bin.n) {
    res->json_header = (long)b->n;
    buf_put(b, bin.p, bin.n);
    res->content_type = "application/octet-stream";
  }
  free(bin.p);
  free_infer_result(&r);
}

/* The path's segments after "/v2/models/<name>[/versions/<v>]"; NULL if it names another model. */
static const char* model_route(const char* path, response* res) {
  const char* name = path + strlen("/v2/models/");
  const char* end = strchr(name, '/');
  size_t n = end ? (size_t)(end - name) : strlen(name);
  if (n != model.name.len || memcmp(name, model.name.ptr, n) != 0) {
    buf m = {0};
    buf_str(&m, "unknown model '");
    buf_put(&m, name, n > 64 ? 64 : n);
    buf_str(&m, "': this server serves '");
    buf_put(&m, model.name.ptr, model.name.len);
    buf_str(&m, "'");
    respond_error(res, 404, m.p, NULL, NULL);
    free(m.p);
    return NULL;
  }
  const char* rest = name + n;
  if (strncmp(rest, "/versions/", 10) == 0) {
    const char* v = rest + 10;
    const char* vend = strchr(v, '/');
    size_t vn = vend ? (size_t)(vend - v) : strlen(v);
    if (vn != 1 || v[0] != '1') { respond_error(res, 404, "unknown model version: this server has version 1", NULL, NULL); return NULL; }
    rest = v + vn;
  }
  return rest;
}

static void route(wf_handle request, int method, const char* path, response* res) {
  enum { GET = 0, HEAD = 1, POST = 2 };
  int is_get = method == GET || method == HEAD;
  buf* b = &res->body;
  res->status = 200;
  res->content_type = "application/json";
  res->json_header = -1;
  if (!strcmp(path, "/v2/health/live") || !strcmp(path, "/v2/health/ready") || !strcmp(path, "/v2")) {
    if (!is_get) { respond_error(res, 405, path, " takes GET", NULL); res->allow = "GET"; return; }
    if (!strcmp(path, "/v2")) buf_str(b, "{\"name\":\"wasmforge\",\"version\":\"0.1.0\",\"extensions\":[\"binary_tensor_data\"]}");
    else buf_str(b, !strcmp(path, "/v2/health/live") ? "{\"live\":true}" : "{\"ready\":true}");
    return;
  }
  if (strncmp(path, "/v2/models/", 11) != 0) {
    respond_error(res, 404, "no such path: ", path,
                  " (this server speaks the Open Inference Protocol: /v2/health/live, /v2/health/ready, "
                  "/v2/models/<name>, /v2/models/<name>/ready, /v2/models/<name>/infer)");
    return;
  }
  const char* rest = model_route(path, res);
  if (!rest) return;
  if (!*rest || !strcmp(rest, "/ready")) {
    if (!is_get) { respond_error(res, 405, path, " takes GET", NULL); res->allow = "GET"; return; }
    if (*rest) {
      buf_str(b, "{\"name\":");
      buf_json_str(b, model.name.ptr, model.name.len);
      buf_str(b, ",\"ready\":true}");
    } else model_metadata_json(b);
    return;
  }
  if (strcmp(rest, "/infer") != 0) { respond_error(res, 404, "no such path: ", path, NULL); return; }
  if (method != POST) { respond_error(res, 405, path, " takes POST", NULL); res->allow = "POST"; return; }

  wf_handle headers = wf_request_headers(request);
  size_t hl = 0, cl = 0;
  char* header_len = request_header(headers, "inference-header-content-length", &hl);
  char* content_len = request_header(headers, "content-length", &cl);
  wf_fields_drop(headers);
  /* the largest body a request for this model needs: its inputs as JSON text */
  size_t limit = 24 * model_input_bytes + (1u << 20);
  buf body = {0};
  int st = content_len && strtoull(content_len, NULL, 10) > limit ? 413 : read_body(request, &body, limit);
  if (st == 413) {
    buf l = {0};
    buf_fmt_u(&l, limit);
    respond_error(res, 413, "the body is larger than this model's requests can be: at most ", l.p, " bytes");
    free(l.p);
  } else if (st) respond_error(res, 400, "the request's body cannot be read", NULL, NULL);
  else {
    size_t json_len = body.n;
    if (header_len) {
      char* end;
      unsigned long long v = strtoull(header_len, &end, 10);
      if (!hl || *end || v > body.n) {
        respond_error(res, 400, "Inference-Header-Content-Length must be the JSON header's length in bytes, "
                                "at most the body's", NULL, NULL);
        st = 400;
      }
      json_len = (size_t)v;
    }
    if (!st) {
      if (body.p == NULL) buf_put(&body, "", 0);
      infer(res, &body, json_len);
    }
  }
  free(body.p);
  free(header_len);
  free(content_len);
}

__attribute__((export_name("wasi:http/incoming-handler@0.2.12#handle")))
void wf_handle_request(wf_handle request, wf_handle outparam) {
  static int have_model;
  if (!have_model) {
    wf_model_metadata(&model);
    for (uint32_t i = 0; i < model.inputs.len; ++i) {
      wf_tensor_info* t = (wf_tensor_info*)model.inputs.ptr + i;
      size_t n = t->datatype < DT_COUNT ? dt_sizes[t->datatype] : 1;
      for (uint32_t d = 0; d < t->shape.len; ++d) n *= ((uint32_t*)t->shape.ptr)[d];
      model_input_bytes += n;
    }
    have_model = 1;
  }
  struct { uint8_t tag; wf_str other; } method;
  struct { uint8_t some; wf_str s; } path;
  wf_request_method(request, &method);
  wf_request_path(request, &path);
  buf p = {0};
  if (path.some) buf_put(&p, path.s.ptr, path.s.len);
  else buf_str(&p, "/");
  char* q = strchr(p.p, '?');
  if (q) *q = '\0';
  response res = {0};
  route(request, method.tag, p.p, &res);
  wf_request_drop(request);
  send(outparam, &res);
  free(res.body.p);
  free(p.p);
  if (path.some && path.s.len) free(path.s.ptr);
  if (method.tag == 9 && method.other.len) free(method.other.ptr);
}
