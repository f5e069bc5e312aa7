-- How the merchant's certificate is trusted: pinned by its fingerprint (`merchant add --cert`,
-- the merchant's own certificate) or issued by the merchant CA. An issued certificate is accepted
-- only while it chains to a CA in `http.merchant_ca_cert`, so taking a CA out of that file revokes
-- every certificate it issued; only a pinned one is accepted without a trusted issuer. NULL for
-- merchants registered before V73, whose certificates are judged as before (either way).
ALTER TABLE merchants ADD COLUMN cert_pinned BOOLEAN;
