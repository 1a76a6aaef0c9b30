/*
 * memd._resp: the request parser's fast path in C (memd.resp.RequestParser uses it when built).
 *
 * split(buf, pos, max_args, max_bulk, out) reads the complete commands that start at buf[pos] and
 * are written the way clients write them: "*<n>\r\n" then n times "$<len>\r\n<len bytes>" and two
 * more bytes (Redis does not check them; neither does the Python parser), with n in 1..max_args and
 * len in 0..max_bulk, both spelled as canonical decimals (no sign, no leading zero). Each command
 * is appended to ``out`` as a list of bytes. It stops at the first frame that is not complete or
 * not of that form, and returns (pos after the last command read, stopped) where ``stopped`` is
 * True when a whole header line it does not take was seen there (an inline command, "*0", a
 * length over a limit or not canonical, another type byte): memd.resp's Python parser, the
 * reference for every error and for what Redis accepts beyond this form, reads on from that
 * position. A frame cut short returns False: the caller hands its bytes to the Python parser
 * too, which checks the limits of what has arrived of it.
 *
 * Why in C: RequestParser used hiredis.Reader for this, which parses replies, not requests: it
 * accepts what Redis refuses (nested arrays, ":1", RESP3 types) and checks no limit, so each
 * batch was packed back with hiredis.pack_command and compared with the bytes read, a guard that
 * cost more than the parse (0.3-0.9 us of a pipelined command's 0.6-0.9 us). This reader takes
 * only what is exact by construction and needs no guard.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* A canonical decimal in [0, 10^18): its value, or -1. */
static long long canonical(const char *p, Py_ssize_t n)
{
    long long v = 0;
    Py_ssize_t i;
    if (n <= 0 || n > 18)
        return -1;
    if (p[0] == '0')
        return n == 1 ? 0 : -1;
    for (i = 0; i < n; i++) {
        char c = p[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    return v;
}

/* The header line at s[p] ('*' or '$' expected): 1 and *value, *next set; 0 cut short; -1 not taken. */
static int header(const char *s, Py_ssize_t n, Py_ssize_t p, char type, long long *value, Py_ssize_t *next)
{
    const char *cr;
    Py_ssize_t room = n - p - 1;
    if (s[p] != type)
        return -1;
    if (room > 20)
        room = 20; /* "\r\n" within 19 digits: longer is not canonical */
    cr = memchr(s + p + 1, '\r', (size_t)room);
    if (cr == NULL)
        return room == 20 ? -1 : 0;
    if (cr + 1 >= s + n)
        return 0;
    if (cr[1] != '\n')
        return -1;
    *value = canonical(s + p + 1, cr - (s + p + 1));
    *next = cr - s + 2;
    return 1;
}

static PyObject *split(PyObject *self, PyObject *args)
{
    PyObject *buf, *out, *cmd = NULL;
    Py_ssize_t pos;
    long long max_args, max_bulk;
    const char *s;
    Py_ssize_t n;
    int stopped = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!nLLO!", &PyBytes_Type, &buf, &pos, &max_args, &max_bulk, &PyList_Type, &out))
        return NULL;
    s = PyBytes_AS_STRING(buf);
    n = PyBytes_GET_SIZE(buf);
    if (max_bulk > PY_SSIZE_T_MAX - 2)
        max_bulk = PY_SSIZE_T_MAX - 2; /* (p + size + 2 stays in range) */
    if (pos < 0 || pos > n) {
        PyErr_SetString(PyExc_ValueError, "pos out of range");
        return NULL;
    }
    while (pos < n) {
        long long count, size;
        Py_ssize_t p, i;
        int h = header(s, n, pos, '*', &count, &p);
        if (h <= 0 || count < 1 || count > max_args) {
            stopped = h != 0; /* a header it does not take, or "*0" / over max_args: Python's */
            break;
        }
        if ((n - p) / 6 < count)
            break; /* cut short: each argument takes 6 bytes at least ("$0\r\n\r\n"); allocate nothing yet */
        cmd = PyList_New((Py_ssize_t)count);
        if (cmd == NULL)
            return NULL;
        for (i = 0; i < count; i++) {
            PyObject *arg;
            if (p >= n) {
                h = 0;
                break;
            }
            h = header(s, n, p, '$', &size, &p);
            if (h <= 0)
                break;
            if (size < 0 || size > max_bulk) {
                h = -1;
                break;
            }
            if (n - p < (Py_ssize_t)size + 2) {
                h = 0;
                break;
            }
            arg = PyBytes_FromStringAndSize(s + p, (Py_ssize_t)size);
            if (arg == NULL) {
                Py_DECREF(cmd);
                return NULL;
            }
            PyList_SET_ITEM(cmd, i, arg);
            p += (Py_ssize_t)size + 2;
        }
        if (i < count) {
            Py_DECREF(cmd);
            stopped = h < 0;
            break;
        }
        if (PyList_Append(out, cmd) < 0) {
            Py_DECREF(cmd);
            return NULL;
        }
        Py_DECREF(cmd);
        pos = p;
    }
    return Py_BuildValue("(nO)", pos, stopped ? Py_True : Py_False);
}

static PyMethodDef methods[] = {
    {"split", split, METH_VARARGS,
     "split(buf, pos, max_args, max_bulk, out) -> (pos, stopped): append buf's complete plain RESP commands "
     "from pos to out (see the module's source for what it takes and where it stops)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "memd._resp", "The request parser's fast path (memd.resp.RequestParser).", -1, methods,
};

PyMODINIT_FUNC PyInit__resp(void)
{
    return PyModule_Create(&module);
}
