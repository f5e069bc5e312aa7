-- A mobile number identifies one customer on the sign-in page, among the enabled mobile
-- terminals (login_begin looks up only those). A disabled one kept its number for good: the
-- number could be registered to no one again, not even to a new customer who got it from the
-- carrier. Only enabled mobile terminals hold their number now.
DROP INDEX terminals_mobile_msisdn;
CREATE UNIQUE INDEX terminals_mobile_msisdn ON terminals (msisdn)
    WHERE kind = 'mobile' AND status = 'enabled';
