// The coordinator's tables; the same on every backend (see migrations/<backend>/).

diesel::table! {
    resources (name) {
        name -> Text,
        try_url -> Text,
        confirm_url -> Text,
        cancel_url -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    transactions (gid) {
        gid -> Text,
        status -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        expires_at -> BigInt,
        finished_at -> Nullable<BigInt>,
        reason -> Nullable<Text>,
        metadata -> Text,
        attempts -> BigInt,
        next_retry_at -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
        due_at -> BigInt,
        lease_owner -> Nullable<Text>,
        protocol -> Text,
        options -> Nullable<Text>,
    }
}

diesel::table! {
    branches (gid, branch_id) {
        gid -> Text,
        branch_id -> Text,
        resource -> Text,
        status -> Text,
        payload -> Text,
        try_outcome -> Nullable<Text>,
        response -> Nullable<Text>,
        attempts -> BigInt,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        confirm_url -> Nullable<Text>,
        cancel_url -> Nullable<Text>,
    }
}

diesel::joinable!(branches -> transactions (gid));
diesel::allow_tables_to_appear_in_same_query!(resources, transactions, branches);

diesel::table! {
    stock (key) {
        key -> Text,
        available -> BigInt,
        locked -> BigInt,
        consumed -> BigInt,
        version -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    stock_reservations (gid, branch_id, key) {
        gid -> Text,
        branch_id -> Text,
        key -> Text,
        amount -> BigInt,
        state -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    tcc_barriers (gid, branch_id, op) {
        gid -> Text,
        branch_id -> Text,
        op -> Text,
        origin -> Text,
        created_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(stock, stock_reservations);
