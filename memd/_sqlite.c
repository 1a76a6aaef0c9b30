/*
 * memd._sqlite: two hot paths of memd's SQLite use, in C.
 *
 * 1. register_rank(): FTS5's bm25() ranking, computed the same way, reading each match's length faster.
 *
 * Why: ranking a word found in 27,000 of 100,000 memories took ~32 ms with FTS5's own bm25(), and
 * ~80% of that was reading each match's length (its %_docsize row) through an SQL statement per
 * match. This function reads that row with an incremental-blob handle, reopened per match (a
 * direct B-tree seek), and is otherwise FTS5's bm25 line for line: the same IDF, average length,
 * weights and order of floating-point operations, so the scores are bit-for-bit equal (tested
 * against bm25() in tests/unit/test_csqlite.py). Measured: 32 -> 14 ms for that word.
 *
 * 2. executemany(): one statement over many rows with the GIL released once, not once per row.
 *
 * Why: sqlite3's executemany takes the GIL back after every row to bind the next one. While
 * another thread runs Python (writers filling the buffer) each of those handoffs waits for it,
 * and a flush of 100,000 rows that takes 1.5 s alone took twice that beside the writers. Here
 * the rows are read into C values first (GIL held), then bound and stepped without the GIL.
 *
 * Python 3.11's sqlite3 module exposes no database handle and no extension loading, so the
 * handle is read from the connection object, whose C struct starts with it (CPython's
 * Modules/_sqlite/connection.h, unchanged from 3.11 to 3.14). That handle is only meaningful to
 * the copy of SQLite that made it, and this module calls the libsqlite3 it is linked to. Most
 * Pythons link _sqlite3 to that same library; python-build-standalone (what uv, mise and rye
 * install) and pysqlite3-binary carry their own copy linked into the module, and a handle of
 * that copy passed to this one is undefined behaviour. So link_check() first proves the two are
 * one, without touching any handle: it registers an auto-extension in this module's SQLite (a
 * process-wide list that belongs to one copy of the library) and opens a connection through the
 * sqlite3 module. The probe fires only if that module's sqlite3_open_v2 is this library's, and
 * the sqlite3* it receives must equal the pointer at the start of the new connection object,
 * which proves the struct layout as well. Comparing addresses of sqlite3_open_v2 as seen from
 * each module was the alternative; it needs the module's file (python-build-standalone builds
 * _sqlite3 into the interpreter) and can name a library the module does not call (a copy with
 * hidden symbols, an unrelated copy loaded RTLD_GLOBAL). Until the proof holds for a sqlite3
 * module, register_rank() and executemany() refuse its connections; every call also checks the
 * handle against the file name the caller expects.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sqlite3.h>
#include <dlfcn.h>
#include <math.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    sqlite3 *db;
} ConnectionHead;

typedef struct {
    int nPhrase;
    double avgdl;
    double *aIDF;
    double *aFreq;
    sqlite3_blob *blob; /* the docsize row of the current match, reopened per match */
} RankData;

static char docsize_table[128];

static int count_cb(const Fts5ExtensionApi *api, Fts5Context *fts, void *user) {
    (void)api;
    (void)fts;
    (*(sqlite3_int64 *)user)++;
    return SQLITE_OK;
}

static void rank_data_free(void *p) {
    RankData *d = p;
    if (d->blob) sqlite3_blob_close(d->blob);
    sqlite3_free(d);
}

/* Per-query data, as FTS5's fts5Bm25GetData(): average row length and one IDF per phrase. */
static int rank_data(const Fts5ExtensionApi *api, Fts5Context *fts, RankData **out) {
    RankData *p = api->xGetAuxdata(fts, 0);
    int rc = SQLITE_OK;
    if (p == NULL) {
        int n = api->xPhraseCount(fts);
        sqlite3_int64 nRow = 0, nToken = 0;
        sqlite3_int64 nByte = sizeof(RankData) + n * 2 * sizeof(double);
        p = sqlite3_malloc64(nByte);
        if (p == NULL) return SQLITE_NOMEM;
        memset(p, 0, (size_t)nByte);
        p->nPhrase = n;
        p->aIDF = (double *)&p[1];
        p->aFreq = &p->aIDF[n];
        rc = api->xRowCount(fts, &nRow);
        if (rc == SQLITE_OK) rc = api->xColumnTotalSize(fts, -1, &nToken);
        if (rc == SQLITE_OK) p->avgdl = (double)nToken / (double)nRow;
        for (int i = 0; rc == SQLITE_OK && i < n; i++) {
            sqlite3_int64 nHit = 0;
            rc = api->xQueryPhrase(fts, i, (void *)&nHit, count_cb);
            if (rc == SQLITE_OK) {
                double idf = log((nRow - nHit + 0.5) / (nHit + 0.5));
                if (idf <= 0.0) idf = 1e-6;
                p->aIDF[i] = idf;
            }
        }
        if (rc != SQLITE_OK) {
            sqlite3_free(p);
            return rc;
        }
        rc = api->xSetAuxdata(fts, p, rank_data_free);
        if (rc != SQLITE_OK) return rc;
    }
    *out = p;
    return rc;
}

/* The row's length in tokens (all columns): the sum of the varints in its docsize blob. Falls
 * back to xColumnSize when the blob cannot be read, so an odd table is slower, never wrong. */
static int row_tokens(const Fts5ExtensionApi *api, Fts5Context *fts, sqlite3 *db, RankData *p, int *out) {
    sqlite3_int64 rowid = api->xRowid(fts);
    int rc = p->blob ? sqlite3_blob_reopen(p->blob, rowid)
                     : sqlite3_blob_open(db, "main", docsize_table, "sz", rowid, 0, &p->blob);
    if (rc == SQLITE_OK) {
        unsigned char buf[64];
        int len = sqlite3_blob_bytes(p->blob);
        if (len <= (int)sizeof(buf) && sqlite3_blob_read(p->blob, buf, len, 0) == SQLITE_OK) {
            int total = 0, i = 0;
            while (i < len) { /* SQLite varints: 7 bits a byte, most significant first */
                unsigned v = 0;
                unsigned char c;
                do {
                    c = buf[i++];
                    v = (v << 7) | (c & 0x7f);
                } while ((c & 0x80) && i < len);
                total += (int)v;
            }
            *out = total;
            return SQLITE_OK;
        }
    }
    if (p->blob) {
        sqlite3_blob_close(p->blob);
        p->blob = NULL;
    }
    return api->xColumnSize(fts, -1, out);
}

/* FTS5's bm25(), k1 = 1.2, b = 0.75, optional per-column weights. */
static void memd_bm25(const Fts5ExtensionApi *api, Fts5Context *fts, sqlite3_context *ctx, int nVal,
                      sqlite3_value **apVal) {
    const double k1 = 1.2;
    const double b = 0.75;
    double score = 0.0, D = 0.0;
    int nInst = 0;
    RankData *p = NULL;
    int rc = rank_data(api, fts, &p);
    if (rc == SQLITE_OK) {
        memset(p->aFreq, 0, sizeof(double) * p->nPhrase);
        rc = api->xInstCount(fts, &nInst);
    }
    for (int i = 0; rc == SQLITE_OK && i < nInst; i++) {
        int ip, ic, io;
        rc = api->xInst(fts, i, &ip, &ic, &io);
        if (rc == SQLITE_OK) {
            double w = (nVal > ic) ? sqlite3_value_double(apVal[ic]) : 1.0;
            p->aFreq[ip] += w;
        }
    }
    if (rc == SQLITE_OK) {
        int nTok = 0;
        rc = row_tokens(api, fts, sqlite3_context_db_handle(ctx), p, &nTok);
        D = (double)nTok;
    }
    if (rc == SQLITE_OK) {
        for (int i = 0; i < p->nPhrase; i++) {
            score += p->aIDF[i] * ((p->aFreq[i] * (k1 + 1.0)) / (p->aFreq[i] + k1 * (1 - b + b * D / p->avgdl)));
        }
        sqlite3_result_double(ctx, -1.0 * score);
    } else {
        sqlite3_result_error_code(ctx, rc);
    }
}

/* The sqlite3 modules proven to run this module's SQLite: a list of (module, its Connection type), or NULL.
 * Entries are never removed, so references borrowed from it stay valid. */
static PyObject *proven;

/* The probe: an auto-extension runs in the thread that opens a connection, inside sqlite3_open_v2. Only
 * the probing thread is armed, so a connection opened meanwhile by another thread (with this SQLite) is
 * left alone. */
static _Thread_local int probe_armed;
static _Thread_local sqlite3 *probe_seen;

static int probe_entry(sqlite3 *db, char **err, const struct sqlite3_api_routines *api) {
    (void)err;
    (void)api;
    if (probe_armed) probe_seen = db;
    return SQLITE_OK;
}

/* The file holding the code at addr (a shared library, an extension module, the interpreter). */
static const char *code_file(const void *addr) {
    Dl_info info;
    if (addr != NULL && dladdr(addr, &info) && info.dli_fname != NULL && info.dli_fname[0] != '\0') return info.dli_fname;
    return "(unknown file)";
}

static PyObject *link_result(int same, PyObject *detail) {
    if (detail == NULL) return NULL;
    return Py_BuildValue("(NN)", PyBool_FromLong(same), detail);
}

static PyObject *py_link_check(PyObject *self, PyObject *mod) {
    (void)self;
    const char *ours = code_file((const void *)sqlite3_libversion);
    PyObject *conn_type = PyObject_GetAttrString(mod, "Connection");
    if (conn_type == NULL || !PyType_Check(conn_type)) {
        Py_XDECREF(conn_type);
        PyErr_Clear();
        return link_result(0, PyUnicode_FromString("the sqlite3 module has no Connection type"));
    }
    PyObject *version = PyObject_GetAttrString(mod, "sqlite_version");
    if (version == NULL) PyErr_Clear();
    const char *theirs = code_file((const void *)((PyTypeObject *)conn_type)->tp_dealloc);

    probe_seen = NULL;
    probe_armed = 1;
    int rc = sqlite3_auto_extension((void (*)(void))probe_entry);
    PyObject *conn = rc == SQLITE_OK ? PyObject_CallMethod(mod, "connect", "s", ":memory:") : NULL;
    probe_armed = 0;
    sqlite3_cancel_auto_extension((void (*)(void))probe_entry);
    sqlite3 *seen = probe_seen;
    probe_seen = NULL;

    PyObject *detail = NULL;
    int same = 0;
    if (rc != SQLITE_OK) {
        detail = PyUnicode_FromFormat("cannot register the probe in this SQLite: %s", sqlite3_errstr(rc));
    } else if (conn == NULL) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        detail = PyUnicode_FromFormat("the sqlite3 module cannot open :memory: (%S)", value ? value : Py_None);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    } else if (seen == NULL) {
        detail = PyUnicode_FromFormat("Python's sqlite3 runs another copy of SQLite, %S (its module: %s), than the "
                                      "one memd._sqlite is linked to, %s (%s)",
                                      version ? version : Py_None, theirs, sqlite3_libversion(), ours);
    } else if (!PyObject_TypeCheck(conn, (PyTypeObject *)conn_type) ||
               Py_TYPE(conn)->tp_basicsize < (Py_ssize_t)sizeof(ConnectionHead) || ((ConnectionHead *)conn)->db != seen) {
        detail = PyUnicode_FromFormat("Python's sqlite3 runs this SQLite %s (%s) but its Connection object does "
                                      "not start with the database handle", sqlite3_libversion(), ours);
    } else {
        same = 1;
        detail = PyUnicode_FromFormat("Python's sqlite3 runs the SQLite memd._sqlite is linked to: %s (%s)",
                                      sqlite3_libversion(), ours);
    }
    if (conn != NULL) {
        PyObject *r = PyObject_CallMethod(conn, "close", NULL);
        if (r == NULL) PyErr_Clear();
        Py_XDECREF(r);
        Py_DECREF(conn);
    }
    Py_XDECREF(version);
    int known = 0;
    for (Py_ssize_t i = 0; proven != NULL && i < PyList_GET_SIZE(proven); i++)
        known |= PyTuple_GET_ITEM(PyList_GET_ITEM(proven, i), 1) == conn_type;
    if (same && !known && detail != NULL) {
        if (proven == NULL) proven = PyList_New(0);
        PyObject *pair = proven ? Py_BuildValue("(OO)", mod, conn_type) : NULL;
        if (pair == NULL || PyList_Append(proven, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(conn_type);
            Py_DECREF(detail);
            return NULL;
        }
        Py_DECREF(pair);
    }
    Py_DECREF(conn_type);
    return link_result(same, detail);
}

/* The sqlite3* of a connection of a proven sqlite3 module, checked against the main file the caller expects;
 * *module_out (borrowed) is that module. */
static sqlite3 *connection_db(PyObject *conn, const char *expect_file, PyObject **module_out) {
    Py_ssize_t n = proven ? PyList_GET_SIZE(proven) : 0;
    PyObject *module = NULL;
    for (Py_ssize_t i = 0; module == NULL && i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(proven, i);
        if (PyObject_TypeCheck(conn, (PyTypeObject *)PyTuple_GET_ITEM(pair, 1))) module = PyTuple_GET_ITEM(pair, 0);
    }
    if (module == NULL) {
        if (n == 0)
            PyErr_SetString(PyExc_RuntimeError, "memd._sqlite has not proven that Python's sqlite3 runs its SQLite "
                                                "(link_check): it does not touch a connection's handle");
        else
            PyErr_Format(PyExc_TypeError, "a connection of a sqlite3 module that link_check proved is needed, not %s",
                         Py_TYPE(conn)->tp_name);
        return NULL;
    }
    *module_out = module;
    sqlite3 *db = ((ConnectionHead *)conn)->db;
    const char *file = db ? sqlite3_db_filename(db, "main") : NULL;
    if (file == NULL || strcmp(file, expect_file) != 0) {
        PyErr_Format(PyExc_RuntimeError, "connection handle check failed (main file %s, expected %s)",
                     file ? file : "(none)", expect_file);
        return NULL;
    }
    return db;
}

static PyObject *py_register(PyObject *self, PyObject *args) {
    PyObject *conn;
    const char *expect_file, *table;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oss", &conn, &expect_file, &table)) return NULL;
    if (strlen(table) >= sizeof(docsize_table)) {
        PyErr_SetString(PyExc_ValueError, "docsize table name too long");
        return NULL;
    }
    PyObject *module;
    sqlite3 *db = connection_db(conn, expect_file, &module);
    if (db == NULL) return NULL;
    fts5_api *api = NULL;
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT fts5(?1)", -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_pointer(stmt, 1, (void *)&api, "fts5_api_ptr", NULL);
        sqlite3_step(stmt);
        rc = sqlite3_finalize(stmt);
    }
    if (rc != SQLITE_OK || api == NULL || api->iVersion < 2) {
        PyErr_Format(PyExc_RuntimeError, "FTS5 API unavailable: %s", sqlite3_errmsg(db));
        return NULL;
    }
    memcpy(docsize_table, table, strlen(table) + 1);
    rc = api->xCreateFunction(api, "memd_bm25", NULL, memd_bm25, NULL);
    if (rc != SQLITE_OK) {
        PyErr_Format(PyExc_RuntimeError, "cannot create memd_bm25: %s", sqlite3_errstr(rc));
        return NULL;
    }
    Py_RETURN_NONE;
}

typedef struct {
    int type; /* SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB, SQLITE_NULL */
    sqlite3_int64 i;
    double d;
    const char *p; /* points into a str's cached UTF-8 or a bytes object, alive as long as `rows` */
    Py_ssize_t n;
} Value;

static int read_value(PyObject *o, Value *v) {
    if (o == Py_None) {
        v->type = SQLITE_NULL;
    } else if (PyLong_Check(o)) {
        int overflow = 0;
        v->i = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow) {
            PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to SQLite INTEGER");
            return -1;
        }
        if (v->i == -1 && PyErr_Occurred()) return -1;
        v->type = SQLITE_INTEGER;
    } else if (PyFloat_Check(o)) {
        v->d = PyFloat_AS_DOUBLE(o);
        v->type = SQLITE_FLOAT;
    } else if (PyUnicode_Check(o)) {
        v->p = PyUnicode_AsUTF8AndSize(o, &v->n);
        if (v->p == NULL) return -1;
        v->type = SQLITE_TEXT;
    } else if (PyBytes_Check(o)) {
        v->p = PyBytes_AS_STRING(o);
        v->n = PyBytes_GET_SIZE(o);
        v->type = SQLITE_BLOB;
    } else {
        PyErr_Format(PyExc_TypeError, "unsupported parameter type %s", Py_TYPE(o)->tp_name);
        return -1;
    }
    return 0;
}

static int bind_value(sqlite3_stmt *stmt, int col, const Value *v) {
    switch (v->type) {
    case SQLITE_INTEGER: return sqlite3_bind_int64(stmt, col, v->i);
    case SQLITE_FLOAT: return sqlite3_bind_double(stmt, col, v->d);
    case SQLITE_TEXT: return sqlite3_bind_text64(stmt, col, v->p, (sqlite3_uint64)v->n, SQLITE_STATIC, SQLITE_UTF8);
    case SQLITE_BLOB: return sqlite3_bind_blob64(stmt, col, v->p, (sqlite3_uint64)v->n, SQLITE_STATIC);
    default: return sqlite3_bind_null(stmt, col);
    }
}

static PyObject *py_executemany(PyObject *self, PyObject *args) {
    PyObject *conn, *rows;
    const char *expect_file, *sql;
    (void)self;
    if (!PyArg_ParseTuple(args, "OssO!", &conn, &expect_file, &sql, &PyList_Type, &rows)) return NULL;
    PyObject *module;
    sqlite3 *db = connection_db(conn, expect_file, &module);
    if (db == NULL) return NULL;
    Py_ssize_t nrows = PyList_GET_SIZE(rows);
    if (nrows == 0) Py_RETURN_NONE;
    PyObject *first = PyList_GET_ITEM(rows, 0);
    if (!PyTuple_Check(first)) {
        PyErr_SetString(PyExc_TypeError, "rows must be tuples");
        return NULL;
    }
    Py_ssize_t ncols = PyTuple_GET_SIZE(first);
    Value *values = PyMem_Calloc((size_t)(nrows * (ncols ? ncols : 1)), sizeof(Value));
    if (values == NULL) return PyErr_NoMemory();
    for (Py_ssize_t r = 0; r < nrows; r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != ncols) {
            PyMem_Free(values);
            PyErr_SetString(PyExc_TypeError, "rows must be tuples of one length");
            return NULL;
        }
        for (Py_ssize_t c = 0; c < ncols; c++) {
            if (read_value(PyTuple_GET_ITEM(row, c), &values[r * ncols + c]) < 0) {
                PyMem_Free(values);
                return NULL;
            }
        }
    }
    int rc;
    char *err = NULL;
    Py_BEGIN_ALLOW_THREADS
    sqlite3_stmt *stmt = NULL;
    rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK && sqlite3_bind_parameter_count(stmt) != ncols) {
        rc = SQLITE_RANGE;
        err = sqlite3_mprintf("the statement takes %d parameters, rows have %d", sqlite3_bind_parameter_count(stmt),
                              (int)ncols);
    }
    for (Py_ssize_t r = 0; rc == SQLITE_OK && r < nrows; r++) {
        for (Py_ssize_t c = 0; rc == SQLITE_OK && c < ncols; c++) rc = bind_value(stmt, (int)c + 1, &values[r * ncols + c]);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(stmt);
            while (rc == SQLITE_ROW) rc = sqlite3_step(stmt);
            rc = rc == SQLITE_DONE ? sqlite3_reset(stmt) : rc;
        }
    }
    if (rc != SQLITE_OK && err == NULL) err = sqlite3_mprintf("%s", sqlite3_errmsg(db));
    sqlite3_finalize(stmt);
    Py_END_ALLOW_THREADS
    PyMem_Free(values);
    if (rc != SQLITE_OK) {
        const char *kind = (rc & 0xff) == SQLITE_CONSTRAINT ? "IntegrityError" : "OperationalError";
        PyObject *exc = PyObject_GetAttrString(module, kind);
        if (exc != NULL) {
            PyErr_Format(exc, "%s", err ? err : sqlite3_errstr(rc));
            Py_DECREF(exc);
        }
        sqlite3_free(err);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"link_check", py_link_check, METH_O,
     "link_check(sqlite3_module) -> (same, detail): whether that module runs the SQLite this module is linked to "
     "(proven by a probe, not assumed); the other functions accept only its connections, and only if same."},
    {"register_rank", py_register, METH_VARARGS,
     "register_rank(conn, main_file, docsize_table): add FTS5 auxiliary function memd_bm25 to conn."},
    {"executemany", py_executemany, METH_VARARGS,
     "executemany(conn, main_file, sql, rows): run sql once per tuple in the list rows, the GIL released."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "memd._sqlite", NULL, -1, methods};

PyMODINIT_FUNC PyInit__sqlite(void) { return PyModule_Create(&module); }
