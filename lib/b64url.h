/* base64url (RFC 4648 section 5) without padding, strict decoding. */
#ifndef METAC_B64URL_H
#define METAC_B64URL_H

#include <stddef.h>
#include <stdint.h>

/* Characters needed to encode n bytes, not counting the NUL. */
size_t b64url_encoded_len(size_t n);
/* Writes a NUL-terminated string; -ENOSPC if out is too small. */
int b64url_encode(const uint8_t *in, size_t n, char *out, size_t outsz);
/* Decodes exactly len characters. Rejects padding, characters outside the
 * alphabet, a length of 1 mod 4 and non-zero trailing bits (so every byte
 * string has exactly one encoding): -EINVAL. -ENOSPC if out is too small. */
int b64url_decode(const char *in, size_t len, uint8_t *out, size_t outsz,
		  size_t *outlen);

#endif
