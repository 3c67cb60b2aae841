/*
 * Why nats-server sometimes refuses valid JWT credentials from nats.c 3.4 ("Signature missing").
 *
 * Opens COUNT connections one after the other to a nats-server running decentralized JWT
 * authentication (the configuration `meshctl bus init` writes), with the user JWT and seed of a
 * .creds file, and counts how many the server refuses. Each connection signs the server's nonce in
 * a signature callback of this program (the same Ed25519 signature nats.c's own file-based
 * callback makes, with nats_Sign) and records, before handing it to nats.c:
 *
 *   - the signature's first byte, and
 *   - what nats.c's own base64url encoder (nats_Base64RawURL_EncodeString, the function
 *     _connectProto calls on the signature; exported by libnats though not declared in nats.h)
 *     makes of it.
 *
 *   nats_sig_repro URL CREDS_FILE COUNT MODE
 *
 * MODE
 *   pass    hand every signature to nats.c unchanged (what nats.c does with a .creds file)
 *   refuse  refuse, from the callback, a signature whose first byte is 0, so that nats.c never
 *           sends a CONNECT without one (what MeshBus does), and count those
 *   files   natsOptions_SetUserCredentialsFromFiles: nats.c's own callbacks, nothing observed
 *
 * Prints one line:
 *   mode=M connections=N connected=C refused_by_server=R sig_first_byte_zero=Z encoded_null=E
 *          refused_with_zero_byte=RZ refused_other=RO refused_by_callback=RC
 *
 * Build (Debian packages libnats-dev, gcc, pkg-config):
 *   gcc -O2 -Wall -Wextra -o nats_sig_repro nats_sig_repro.c $(pkg-config --cflags --libs libnats)
 * Run it with scripts/repro-nats-signature.sh, which starts the server.
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* In libnats 3.4 (src/util.c), exported, not declared in nats.h. */
extern natsStatus nats_Base64RawURL_EncodeString(const unsigned char *src, int srcLen, char **pDest);

typedef struct {
    char *jwt;
    char *seed;
    int  refuseZero;
    /* what the last signature callback saw */
    int  called;
    int  firstByteZero;
    int  encodedNull;
    int  refused;
} creds;

static char *
block(const char *text, const char *name)
{
    const char *p = strstr(text, name);
    if (p == NULL) return NULL;
    p = strchr(p, '\n');
    if (p == NULL) return NULL;
    while (*p == '\n' || *p == '\r' || *p == ' ') p++;
    const char *e = p;
    while (*e != '\0' && *e != '\n' && *e != '\r') e++;
    char *out = malloc((size_t) (e - p) + 1);
    memcpy(out, p, (size_t) (e - p));
    out[e - p] = '\0';
    return out;
}

static natsStatus
onJWT(char **userJWT, char **customErrTxt, void *closure)
{
    (void) customErrTxt;
    *userJWT = strdup(((creds *) closure)->jwt);
    return NATS_OK;
}

static natsStatus
onSign(char **customErrTxt, unsigned char **signature, int *signatureLength, const char *nonce, void *closure)
{
    creds *c = closure;
    unsigned char *sig = NULL;
    int len = 0;
    char *encoded = NULL;

    natsStatus s = nats_Sign(c->seed, nonce, &sig, &len);
    if (s != NATS_OK) return s;
    c->called = 1;
    c->firstByteZero = (len > 0 && sig[0] == 0);
    if (nats_Base64RawURL_EncodeString(sig, len, &encoded) == NATS_OK && encoded == NULL)
        c->encodedNull = 1;
    free(encoded);
    if (c->refuseZero && c->firstByteZero) {
        c->refused = 1;
        free(sig);
        *customErrTxt = strdup("signature starts with a zero byte, which nats.c 3.4 would drop");
        return NATS_ERR;
    }
    *signature = sig;
    *signatureLength = len;
    return NATS_OK;
}

int
main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s URL CREDS_FILE COUNT pass|refuse|files\n", argv[0]);
        return 2;
    }
    const char *url = argv[1], *credsPath = argv[2], *mode = argv[4];
    int count = atoi(argv[3]);
    int files = strcmp(mode, "files") == 0;
    creds c = { 0 };
    c.refuseZero = strcmp(mode, "refuse") == 0;
    if (!files && !c.refuseZero && strcmp(mode, "pass") != 0) {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }

    FILE *f = fopen(credsPath, "r");
    if (f == NULL) { perror(credsPath); return 1; }
    char text[8192];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    c.jwt = block(text, "BEGIN NATS USER JWT");
    c.seed = block(text, "BEGIN USER NKEY SEED");
    if (c.jwt == NULL || c.seed == NULL) { fprintf(stderr, "no JWT or seed in %s\n", credsPath); return 1; }

    nats_Open(-1);
    int connected = 0, refusedByServer = 0, zero = 0, encodedNull = 0, refusedZero = 0, refusedOther = 0, refusedByCallback = 0;
    for (int i = 0; i < count; i++) {
        natsOptions *opts = NULL;
        natsConnection *nc = NULL;
        natsOptions_Create(&opts);
        natsOptions_SetURL(opts, url);
        natsOptions_SetTimeout(opts, 5000);
        natsOptions_SetAllowReconnect(opts, false);
        if (files)
            natsOptions_SetUserCredentialsFromFiles(opts, credsPath, NULL);
        else
            natsOptions_SetUserCredentialsCallbacks(opts, onJWT, &c, onSign, &c);
        c.called = c.firstByteZero = c.encodedNull = c.refused = 0;

        natsStatus s = natsConnection_Connect(&nc, opts);
        zero += c.firstByteZero;
        encodedNull += c.encodedNull;
        if (s == NATS_OK) {
            connected++;
        } else if (c.refused) {
            refusedByCallback++;
        } else {
            const char *why = nats_GetLastError(NULL);
            if (s == NATS_CONNECTION_AUTH_FAILED || (why != NULL && strstr(why, "Authorization") != NULL)) {
                refusedByServer++;
                if (c.firstByteZero) refusedZero++; else refusedOther++;
            } else {
                fprintf(stderr, "connection %d failed: %s (%s)\n", i, natsStatus_GetText(s), why ? why : "");
                return 1;
            }
        }
        natsConnection_Destroy(nc);
        natsOptions_Destroy(opts);
    }
    printf("mode=%s connections=%d connected=%d refused_by_server=%d sig_first_byte_zero=%d encoded_null=%d "
           "refused_with_zero_byte=%d refused_other=%d refused_by_callback=%d\n",
           mode, count, connected, refusedByServer, zero, encodedNull, refusedZero, refusedOther, refusedByCallback);
    nats_Close();
    free(c.jwt);
    free(c.seed);
    return 0;
}
