/* Error codes: tc_strerror() and tc_err_name() know every code the library
 * returns, errno-style and TC_E*, and never return NULL. */
#include "helpers.h"

#include <errno.h>
#include <string.h>

typedef struct named_code {
    int code;
    const char *name;
    const char *alias; /* the same number under another name, or NULL */
} named_code_t;

#define CODE(e) {-(e), #e, NULL}
static const named_code_t errno_codes[] = {
    CODE(EINVAL),       CODE(ENOMEM),      CODE(EPIPE),
    CODE(ECONNRESET),   CODE(ECONNREFUSED), CODE(ETIMEDOUT),
    CODE(EADDRINUSE),   CODE(EMFILE),      CODE(ENFILE),
    CODE(ECANCELED),    CODE(EALREADY),    CODE(EBUSY),
    CODE(ESHUTDOWN),    CODE(ENOTCONN),    CODE(EMSGSIZE),
    CODE(ENAMETOOLONG), {-EAGAIN, "EAGAIN", "EWOULDBLOCK"}, CODE(ENOENT),
    CODE(EACCES),       CODE(EBADF),       {-ENOTSUP, "ENOTSUP", "EOPNOTSUPP"},
    CODE(EAFNOSUPPORT), CODE(ENOSPC),      CODE(EHOSTUNREACH),
    CODE(ENETUNREACH),  CODE(ECONNABORTED), CODE(EINTR),
};
#undef CODE

#define TCODE(e) {e, #e, NULL}
static const named_code_t tc_codes[] = {
    TCODE(TC_EOF),          TCODE(TC_ENONAME),
    TCODE(TC_EAGAIN_NAME),  TCODE(TC_ENAMEFAIL),
    TCODE(TC_ETLS),         TCODE(TC_ETLS_CERT),
    TCODE(TC_ETLS_HOSTNAME), TCODE(TC_ETLS_EXPIRED),
    TCODE(TC_ETLS_UNKNOWN_CA), TCODE(TC_ETLS_VERSION),
    TCODE(TC_ETLS_NO_CLOSE_NOTIFY),
};
#undef TCODE

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static void
test_err_name_errno(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_OF(errno_codes); i++) {
        const char *name = tc_err_name(errno_codes[i].code);

        assert_non_null(name);
        if (errno_codes[i].alias != NULL &&
            strcmp(name, errno_codes[i].alias) == 0) {
            continue;
        }
        if (strcmp(name, errno_codes[i].name) != 0) {
            fail_msg("tc_err_name(%d) = \"%s\", expected \"%s\"",
                     errno_codes[i].code, name, errno_codes[i].name);
        }
    }
}

static void
test_strerror_errno(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_OF(errno_codes); i++) {
        int code = errno_codes[i].code;
        const char *msg = tc_strerror(code);

        assert_non_null(msg);
        assert_true(strlen(msg) > 0);
        /* An errno code reads like the C library says it: Python turns
         * it into OSError(errno, tc_strerror(err)). */
        if (strcmp(msg, strerror(-code)) != 0) {
            fail_msg("tc_strerror(-%s) = \"%s\", strerror says \"%s\"",
                     errno_codes[i].name, msg, strerror(-code));
        }
    }
}

static void
test_tc_codes(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_OF(tc_codes); i++) {
        int code = tc_codes[i].code;
        const char *name = tc_err_name(code);
        const char *msg = tc_strerror(code);

        assert_true(code < -3000);
        assert_non_null(name);
        assert_non_null(msg);
        if (strcmp(name, tc_codes[i].name) != 0) {
            fail_msg("tc_err_name(%d) = \"%s\", expected \"%s\"", code, name,
                     tc_codes[i].name);
        }
        assert_true(strlen(msg) > 0);
        /* Every TC_E* code has its own message. */
        for (size_t j = 0; j < i; j++) {
            if (strcmp(msg, tc_strerror(tc_codes[j].code)) == 0) {
                fail_msg("%s and %s share the message \"%s\"",
                         tc_codes[i].name, tc_codes[j].name, msg);
            }
        }
    }
}

static void
test_unknown_codes(void **state)
{
    static const int odd[] = {-99999, -3999, -3000, -4000, 12345, 1,
                              -2147483647 - 1, 2147483647};

    (void)state;
    for (size_t i = 0; i < N_OF(odd); i++) {
        const char *name = tc_err_name(odd[i]);
        const char *msg = tc_strerror(odd[i]);

        assert_non_null(name);
        assert_non_null(msg);
        assert_true(strlen(msg) > 0);
    }
    assert_string_equal(tc_err_name(-99999), "UNKNOWN");
    assert_string_equal(tc_err_name(-3999), "UNKNOWN");
    /* 0 is success: it has a message too. */
    assert_non_null(tc_strerror(0));
    assert_non_null(tc_err_name(0));
}

static void
test_strerror_distinguishes(void **state)
{
    (void)state;
    /* TC_EOF must not read like an unknown code. */
    assert_string_not_equal(tc_strerror(TC_EOF), tc_strerror(-99999));
    assert_string_not_equal(tc_strerror(-ECONNRESET), tc_strerror(-EPIPE));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_name_errno),
        cmocka_unit_test(test_strerror_errno),
        cmocka_unit_test(test_tc_codes),
        cmocka_unit_test(test_unknown_codes),
        cmocka_unit_test(test_strerror_distinguishes),
    };

    return cmocka_run_group_tests_name("error", tests, NULL, NULL);
}
